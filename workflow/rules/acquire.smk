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
        "python -m avzsl --quiet --threads {threads} demo-videos --manifest {output.manifest:q}"
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
        contents=local_folder_contents,
        descriptions=lambda w: json.dumps(
            local_source(w)["descriptions"], sort_keys=True
        ),
    shell:
        "python -m avzsl --quiet --threads {threads} scan-local-folder --root {params.root:q}"
        " --manifest {output.manifest:q} --class-names {output.class_names:q}"
        " --descriptions {params.descriptions:q} > {log:q} 2>&1"


rule download_shard:
    """Every shards-th row of the download list; clips go to resources/<dataset>/videos/ (kept across reruns, not
    a declared output), unavailable ones are recorded, never failed."""
    input:
        listing=download_list_file,
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
        "python -m avzsl --quiet --threads {threads} download --list {input.listing:q}"
        " --manifest {output.manifest:q} --unavailable {output.unavailable:q} --videos {params.videos:q}"
        " --shard {wildcards.shard} --shards {params.shards} --options {params.options:q} > {log:q} 2>&1"


rule download_manifest:
    """The shards joined: manifest.csv of the available clips, unavailable.tsv, coverage per split and class."""
    input:
        listing=download_list_file,
        manifests=lambda w: download_shards(w, "manifest"),
        unavailable=lambda w: download_shards(w, "unavailable"),
        splits=coverage_split_inputs,
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
        split_option=lambda w, input: split_dir_option(w, input.splits),
        descriptions=lambda w: json.dumps(
            download_source(w)["descriptions"], sort_keys=True
        ),
    shell:
        "python -m avzsl --quiet --threads {threads} download-manifest --list {input.listing:q}"
        " --shard-manifest {input.manifests:q} --shard-unavailable {input.unavailable:q}"
        " --manifest {output.manifest:q} --unavailable {output.unavailable:q}"
        " --class-names {output.class_names:q} --descriptions {params.descriptions:q}"
        " {params.split_option:q} --coverage-tsv {output.coverage_tsv:q}"
        " --coverage-md {output.coverage_md:q} > {log:q} 2>&1"


rule fetch_ucf_archive:
    """The UCF101 archive given by URL, fetched once (resumed, retried with back-off; sha256 checked when given and
    recorded beside it)."""
    output:
        archive="resources/{dataset}/archive/{filename}",
        record="resources/{dataset}/archive/{filename}.json",
    log:
        "logs/fetch_ucf_archive/{dataset}/{filename}.log",
    wildcard_constraints:
        dataset=_names({"ucf_archive"}),
        filename=r"[^/]+(?<!\.json)",
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=240,
    params:
        url=lambda w: DATASETS[w.dataset]["ucf_archive"]["archive"],
        sha256=lambda w: DATASETS[w.dataset]["ucf_archive"]["sha256"],
        where=lambda w: f"datasets.{w.dataset}.ucf_archive.archive",
        limits=lambda w: fetch_options(DATASETS[w.dataset]["ucf_archive"]["retries"]),
    shell:
        "python -m avzsl --quiet fetch --url {params.url:q} --sha256={params.sha256:q}"
        " --out {output.archive:q} --record {output.record:q} --where {params.where:q}"
        " {params.limits} > {log:q} 2>&1"


rule ucf_archive:
    """UCF101's clips of the benchmark's classes from its .rar (bsdtar, unar as fallback)."""
    input:
        archive=ucf_archive_file,
        class_list=ucf_class_list,
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
        class_list=lambda w, input: (
            ["--classes-file", input.class_list[0]] if input.class_list else []
        ),
        descriptions=lambda w: json.dumps(
            DATASETS[w.dataset]["ucf_archive"]["descriptions"], sort_keys=True
        ),
    shell:
        "python -m avzsl --quiet --threads {threads} ucf-archive --archive {input.archive:q}"
        " --manifest {output.manifest:q} --class-names {output.class_names:q}"
        " --classes {params.classes:q} {params.class_list:q} --descriptions {params.descriptions:q} > {log:q} 2>&1"


rule split_coverage:
    """UCF101 from its archive against the official split: coverage per split and class (downloaded datasets get
    theirs from download_manifest)."""
    input:
        manifest="resources/{dataset}/manifest.csv",
        splits=coverage_split_inputs,
    output:
        coverage_tsv="resources/{dataset}/coverage.tsv",
        coverage_md="resources/{dataset}/coverage.md",
    log:
        "logs/split_coverage/{dataset}.log",
    wildcard_constraints:
        dataset=UCF_COVERAGE_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=10,
    params:
        split_option=lambda w, input: split_dir_option(w, input.splits),
    shell:
        "python -m avzsl --quiet --threads {threads} split-coverage --manifest {input.manifest:q}"
        " {params.split_option:q} --coverage-tsv {output.coverage_tsv:q}"
        " --coverage-md {output.coverage_md:q} > {log:q} 2>&1"
