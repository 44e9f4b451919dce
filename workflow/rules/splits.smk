"""Splits: the two-stage zero-shot structure in the AVCA class-split format, built from a manifest, taken from an
official class-split folder, or imported from a released AVCA tree."""


rule build_splits:
    input:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    output:
        split_outputs("results/splits/{dataset}/default"),
    log:
        "logs/build_splits/{dataset}.log",
    wildcard_constraints:
        dataset=BUILT_SPLIT_DATASETS,
    conda:
        ENV
    params:
        recipe=split_recipe,
        cover=lambda w: (
            "--cover-factors" if DATASETS[w.dataset]["splits"]["cover_factors"] else ""
        ),
        out=lambda w, output: folder_of(output),
    shell:
        "python -m avzsl --quiet --threads {threads} build-splits --manifest {input.manifest:q}"
        " --class-names {input.class_names:q} {params.cover} --recipe {params.recipe:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule copy_splits:
    output:
        split_outputs("results/splits/{dataset}/default"),
    log:
        "logs/copy_splits/{dataset}.log",
    wildcard_constraints:
        dataset=OFFICIAL_SPLIT_DATASETS,
    conda:
        ENV
    params:
        src=lambda w: DATASETS[w.dataset]["splits"]["official_dir"],
        out=lambda w, output: folder_of(output),
    shell:
        "python -m avzsl --quiet --threads {threads} copy-splits --src {params.src:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule import_released_splits:
    output:
        split_outputs("results/splits/{dataset}/{variant}"),
    log:
        "logs/import_released_splits/{dataset}/{variant}.log",
    wildcard_constraints:
        dataset=RELEASED_DATASETS,
        variant="main|cls",
    conda:
        ENV
    params:
        root=lambda w: released(w)["root"],
        name=lambda w: released(w)["dataset"],
        out=lambda w, output: folder_of(output),
    shell:
        "python -m avzsl --quiet --threads {threads} import-released splits --root {params.root:q}"
        " --dataset {params.name} --feature-set {wildcards.variant} --out {params.out:q} > {log:q} 2>&1"


rule fetch_official_splits:
    """The official split of the benchmark (AVCA-GZSL at the pinned commit, every file checked against its pinned
    sha256; verified files are kept in resources/official/), written canonically, with the class names the
    reference embedded."""
    output:
        split_outputs("results/splits/{dataset}/{variant}"),
        class_names="resources/{dataset}/official_{variant}_class_names.csv",
    log:
        "logs/fetch_official_splits/{dataset}/{variant}.log",
    wildcard_constraints:
        dataset=FETCHED_SPLIT_DATASETS,
        variant="main|cls",
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=10,
    params:
        name=lambda w: DATASETS[w.dataset]["splits"]["official"]["dataset"],
        source=lambda w: DATASETS[w.dataset]["splits"]["official"]["source"],
        out=lambda w, output: folder_of(output),
        limits=fetch_options(),
    shell:
        "python -m avzsl --quiet --threads {threads} fetch-official-splits --dataset {params.name}"
        " --variant {wildcards.variant} --source {params.source:q} --cache resources/official"
        " --out {params.out:q} --class-names {output.class_names:q} {params.limits} > {log:q} 2>&1"


rule official_download_list:
    """The download list of a downloaded dataset's official split: YouTube id and time range of every video
    (VGGSound <id>_<start>: 10 s from start; ActivityNet <id>_<k>: its k-th annotated segment).
    """
    input:
        splits=lambda w: split_outputs(dataset_split_dir(w.dataset)),
    output:
        listing="resources/{dataset}/download/official_list.csv",
        problems="resources/{dataset}/download/official_list.problems.txt",
    log:
        "logs/official_download_list/{dataset}.log",
    wildcard_constraints:
        dataset=OFFICIAL_LIST_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(2000),
        runtime=10,
    params:
        name=lambda w: DATASETS[w.dataset]["splits"]["official"]["dataset"],
        variant=lambda w: DATASETS[w.dataset]["splits"]["official"]["variant"],
        annotations=lambda w: DATASETS[w.dataset]["splits"]["official"][
            "activitynet_annotations"
        ],
        splits=lambda w, input: folder_of(input.splits),
    shell:
        "python -m avzsl --quiet --threads {threads} official-download-list --splits {params.splits:q}"
        " --dataset {params.name} --variant {params.variant}"
        " --activitynet-annotations {params.annotations:q} --out {output.listing:q}"
        " --problems {output.problems:q} > {log:q} 2>&1"


rule leakage_free_splits:
    """A split whose unseen classes no pre-training vocabulary of splits.backbone covers; checked (overlap of
    unseen and seen classes, videos in two stages, vocabulary overlap, shared source recordings with
    keep_sources_apart), with the leakage report beside it."""
    input:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
        overrides=leakage_overrides,
        vocabularies=leakage_vocabulary_files,
    output:
        split_outputs("results/splits/{dataset}/default"),
        report="results/splits/{dataset}/default/leakage_report.md",
    log:
        "logs/leakage_free_splits/{dataset}.log",
    wildcard_constraints:
        dataset=LEAKAGE_FREE_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(2000),
        runtime=10,
    params:
        recipe=split_recipe,
        backbone=lambda w: DATASETS[w.dataset]["splits"]["backbone"],
        vocabularies=lambda w: json.dumps(
            DATASETS[w.dataset]["splits"]["vocabularies"], sort_keys=True
        ),
        overrides=lambda w, input: (
            ["--overrides", input.overrides[0]] if input.overrides else []
        ),
        apart=lambda w: (
            "--keep-sources-apart"
            if DATASETS[w.dataset]["splits"]["keep_sources_apart"]
            else ""
        ),
        out=lambda w, output: folder_of(output),
    shell:
        "python -m avzsl --quiet --threads {threads} leakage-free-splits --manifest {input.manifest:q}"
        " --class-names {input.class_names:q} --recipe {params.recipe:q} --backbone {params.backbone:q}"
        " --vocabularies {params.vocabularies:q} {params.overrides:q} {params.apart} --out {params.out:q}"
        " --report {output.report:q} > {log:q} 2>&1"
