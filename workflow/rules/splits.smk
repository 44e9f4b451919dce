"""Splits: the two-stage zero-shot structure in the AVCA class-split format, built from a manifest, taken from an
official class-split folder, or imported from a released AVCA tree."""


rule build_splits:
    input:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    output:
        split_outputs("results/splits/{dataset}/default"),
    params:
        recipe=lambda w: json.dumps({k: v for k, v in DATASETS[w.dataset]["splits"].items()
                                     if k not in ("official_dir", "cover_factors")}, sort_keys=True),
        cover=lambda w: "--cover-factors" if DATASETS[w.dataset]["splits"]["cover_factors"] else "",
        out="results/splits/{dataset}/default",
    wildcard_constraints:
        dataset=BUILT_SPLIT_DATASETS,
    log:
        "logs/build_splits/{dataset}.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} build-splits --manifest {input.manifest:q} --class-names {input.class_names:q} {params.cover}"
        " --recipe {params.recipe:q} --out {params.out:q} > {log:q} 2>&1"


rule official_splits:
    output:
        split_outputs("results/splits/{dataset}/default"),
    params:
        src=lambda w: DATASETS[w.dataset]["splits"]["official_dir"],
        out="results/splits/{dataset}/default",
    wildcard_constraints:
        dataset=OFFICIAL_SPLIT_DATASETS,
    log:
        "logs/official_splits/{dataset}.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} copy-splits --src {params.src:q} --out {params.out:q} > {log:q} 2>&1"


rule import_released_splits:
    output:
        split_outputs("results/splits/{dataset}/{variant}"),
    params:
        root=lambda w: released(w)["root"],
        name=lambda w: released(w)["dataset"],
        out="results/splits/{dataset}/{variant}",
    wildcard_constraints:
        dataset=RELEASED_DATASETS,
        variant="main|cls",
    log:
        "logs/import_released_splits/{dataset}/{variant}.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} import-avca splits --root {params.root:q} --dataset {params.name}"
        " --feature-set {wildcards.variant} --out {params.out:q} > {log:q} 2>&1"
