"""Extract: per-window audio and visual features in shards, merged into one feature store per dataset and
feature set; or the per-video features of a released AVCA tree, imported into the same store format.
"""


rule fetch_weights:
    output:
        weights="resources/weights/{feature_set}/{part}/{filename}",
        record="resources/weights/{feature_set}/{part}/{filename}.json",
    log:
        "logs/fetch_weights/{feature_set}/{part}/{filename}.log",
    wildcard_constraints:
        part="av|audio|video",
        filename=r"[^/]+(?<!\.json)",
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=120,
    params:
        url=lambda w: weight_target(w)["url"],
        sha256=lambda w: weight_target(w)["sha256"],
        where=weight_where,
        check=weight_check,
        limits=fetch_options(),
    shell:
        "python -m avzsl --quiet fetch --url {params.url:q} --sha256={params.sha256:q}"
        " --out {output.weights:q} --record {output.record:q} --where {params.where} {params.check}"
        " {params.limits} > {log:q} 2>&1"


rule extract_shard:
    input:
        manifest="resources/{dataset}/manifest.csv",
        weights=weight_files,
        records=weight_records,
    output:
        "results/features/{dataset}/{feature_set}/shards/{shard}.h5",
    log:
        "logs/extract_shard/{dataset}/{feature_set}/{shard}.log",
    benchmark:
        "benchmarks/extract_shard/{dataset}/{feature_set}/{shard}.tsv"
    wildcard_constraints:
        dataset=VIDEO_DATASETS,
        shard=r"\d+",
    conda:
        ENV
    threads: config["extract"]["threads"]  # split between the network and the decode workers (plan_threads)
    resources:
        gpu=config["extract"]["gpus"],
        mem_mb=mem_by_attempt(4000),
        runtime=240,
    params:
        # every setting that changes a feature is a param: changing it reruns extraction and what follows
        feature_set=extraction_feature_set,
        # the weight files themselves reach extraction inside the feature set (resolve_weight_params)
        records=lambda w, input: weight_record_args(input.records),
        shards=config["extract"]["shards"],
        decoder=config["extract"]["decoder"],
        batch_windows=config["extract"]["batch_windows"],
        device=config["extract"]["device"],
        precision=config["extract"]["precision"],
        max_seconds=max_seconds_option,
        chunk_seconds=config["extract"]["chunk_seconds"],
        chunk_videos=config["extract"]["chunk_videos"],
        videos_per_load=config["extract"]["videos_per_load"],
        missing_modality=config["extract"]["missing_modality"],
        workers=config["extract"]["workers"],
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} extract --manifest {input.manifest:q}"
        " --shard {wildcards.shard} --shards {params.shards} --feature-set {params.feature_set:q}"
        " --feature-set-name {wildcards.feature_set} {params.records:q} --decoder {params.decoder}"
        " --workers {params.workers} --batch-windows {params.batch_windows} --device {params.device}"
        " --precision {params.precision} {params.max_seconds:q} --chunk-seconds {params.chunk_seconds}"
        " --chunk-videos {params.chunk_videos} --videos-per-load {params.videos_per_load}"
        " --missing-modality {params.missing_modality} --out {output:q} > {log:q} 2>&1"


rule merge_features:
    input:
        shard_paths,
    output:
        features="results/features/{dataset}/{feature_set}/features.h5",
        failures="results/features/{dataset}/{feature_set}/failed_media.tsv",
        notes="results/features/{dataset}/{feature_set}/media_notes.tsv",
    log:
        "logs/merge_features/{dataset}/{feature_set}.log",
    wildcard_constraints:
        dataset=VIDEO_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(4000),
        runtime=30,
    shell:
        "python -m avzsl --quiet --threads {threads} merge-features --out {output.features:q}"
        " --failures {output.failures:q} --notes {output.notes:q} {input:q} > {log:q} 2>&1"


rule import_released_features:
    output:
        "results/features/{dataset}/{feature_set}/features.h5",
    log:
        "logs/import_released_features/{dataset}/{feature_set}.log",
    wildcard_constraints:
        dataset=RELEASED_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(8000),
        runtime=60,
    params:
        root=lambda w: released(w)["root"],
        name=lambda w: released(w)["dataset"],
        layout=lambda w: released(w)["layout"],
    shell:
        "python -m avzsl --quiet --threads {threads} import-released features --root {params.root:q}"
        " --dataset {params.name} --feature-set {wildcards.feature_set} --layout {params.layout}"
        " --out {output:q} > {log:q} 2>&1"
