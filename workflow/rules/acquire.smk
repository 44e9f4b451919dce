"""Acquire: videos plus a manifest (video_id, path, label, group) and a class-name table per dataset."""


rule demo_videos:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    log:
        "logs/demo_videos/{dataset}.log",
    benchmark:
        "benchmarks/demo_videos/{dataset}.tsv"
    wildcard_constraints:
        dataset=_names({"demo"}),
    conda:
        ENV
    threads: local_cores()
    resources:
        mem_mb=mem_by_attempt(2000),
        runtime=30,
    params:
        spec=demo_spec,
    shell:
        "python -m training.cli --quiet --threads {threads} demo-data --manifest {output.manifest:q}"
        " --class-names {output.class_names:q} --spec {params.spec:q} --workers {threads} > {log:q} 2>&1"


rule scan_local_folder:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    log:
        "logs/scan_local_folder/{dataset}.log",
    wildcard_constraints:
        dataset=_names({"local"}),
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=10,
    params:
        root=lambda w: local_source(w)["root"],
        descriptions=lambda w: json.dumps(
            local_source(w)["descriptions"], sort_keys=True
        ),
    shell:
        "python -m training.cli --quiet --threads {threads} scan-folder --root {params.root:q}"
        " --manifest {output.manifest:q} --class-names {output.class_names:q}"
        " --descriptions {params.descriptions:q} > {log:q} 2>&1"


rule download_shard:
    """Every shards-th row of the download list; clips go to resources/<dataset>/videos/ (kept across reruns, not
    a declared output), unavailable ones are recorded, never failed."""
    input:
        listing=lambda w: download_source(w)["list"],
    output:
        manifest="resources/{dataset}/download/shard_{shard}.csv",
        unavailable="resources/{dataset}/download/shard_{shard}.unavailable.tsv",
    log:
        "logs/download_shard/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=_names({"download"}),
        shard=r"\d+",
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(2000),
        runtime=lambda w: download_source(w)["runtime"],
        download_slots=lambda w: download_source(w)["slots"],
    params:
        videos=lambda w: f"resources/{w.dataset}/videos",
        shards=lambda w: download_source(w)["shards"],
        options=download_options,
    shell:
        "python -m training.cli --quiet --threads {threads} download --list {input.listing:q}"
        " --manifest {output.manifest:q} --unavailable {output.unavailable:q} --videos {params.videos:q}"
        " --shard {wildcards.shard} --shards {params.shards} --options {params.options:q} > {log:q} 2>&1"


rule download_manifest:
    """The shards joined: manifest.csv of the available clips, unavailable.tsv, coverage per split and class."""
    input:
        listing=lambda w: download_source(w)["list"],
        manifests=lambda w: download_shards(w, "manifest"),
        unavailable=lambda w: download_shards(w, "unavailable"),
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
        unavailable="resources/{dataset}/unavailable.tsv",
        coverage_tsv="resources/{dataset}/coverage.tsv",
        coverage_md="resources/{dataset}/coverage.md",
    log:
        "logs/download_manifest/{dataset}.log",
    wildcard_constraints:
        dataset=_names({"download"}),
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=10,
    params:
        split_option=split_dir_option,
        descriptions=lambda w: json.dumps(
            download_source(w)["descriptions"], sort_keys=True
        ),
    shell:
        "python -m training.cli --quiet --threads {threads} download-merge --list {input.listing:q}"
        " --shard-manifest {input.manifests:q} --shard-unavailable {input.unavailable:q}"
        " --manifest {output.manifest:q} --unavailable {output.unavailable:q}"
        " --class-names {output.class_names:q} --descriptions {params.descriptions:q}"
        " {params.split_option:q} --coverage-tsv {output.coverage_tsv:q}"
        " --coverage-md {output.coverage_md:q} > {log:q} 2>&1"


rule ucf_archive:
    """UCF101's clips of the benchmark's classes from its .rar (bsdtar, unar as fallback)."""
    input:
        archive=lambda w: DATASETS[w.dataset]["ucf_archive"]["archive"],
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    log:
        "logs/ucf_archive/{dataset}.log",
    wildcard_constraints:
        dataset=_names({"ucf_archive"}),
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=120,
    params:
        classes=ucf_classes,
        descriptions=lambda w: json.dumps(
            DATASETS[w.dataset]["ucf_archive"]["descriptions"], sort_keys=True
        ),
    shell:
        "python -m training.cli --quiet --threads {threads} ucf-archive --archive {input.archive:q}"
        " --manifest {output.manifest:q} --class-names {output.class_names:q}"
        " --classes {params.classes:q} --descriptions {params.descriptions:q} > {log:q} 2>&1"
