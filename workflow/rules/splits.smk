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
        "python -m training.cli --quiet --threads {threads} build-splits --manifest {input.manifest:q}"
        " --class-names {input.class_names:q} {params.cover} --recipe {params.recipe:q} --out {params.out:q}"
        " > {log:q} 2>&1"


rule official_splits:
    output:
        split_outputs("results/splits/{dataset}/default"),
    log:
        "logs/official_splits/{dataset}.log",
    wildcard_constraints:
        dataset=OFFICIAL_SPLIT_DATASETS,
    conda:
        ENV
    params:
        src=lambda w: DATASETS[w.dataset]["splits"]["official_dir"],
        out=lambda w, output: folder_of(output),
    shell:
        "python -m training.cli --quiet --threads {threads} copy-splits --src {params.src:q} --out {params.out:q}"
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
        "python -m training.cli --quiet --threads {threads} import-avca splits --root {params.root:q}"
        " --dataset {params.name} --feature-set {wildcards.variant} --out {params.out:q} > {log:q} 2>&1"
