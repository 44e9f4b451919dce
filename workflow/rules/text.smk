"""Text: one embedding per class, keyed by class name."""


rule fetch_text_weights:
    output:
        "resources/weights/_text/{filename}",
    log:
        "logs/fetch_text_weights/{filename}.log",
    wildcard_constraints:
        filename=r"[^/]+(?<!\.json)",
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(1000),
        runtime=120,
    params:
        url=lambda w: text_fetch_target(w)["url"],
        sha256=lambda w: text_fetch_target(w)["sha256"],
        block=f"text.{TEXT_ENCODER}",
        limits=fetch_options(),
    shell:
        "python -m avzsl --quiet fetch --url {params.url:q} --sha256={params.sha256:q}"
        " --out {output:q} --where {params.block} {params.limits} > {log:q} 2>&1"


rule class_text:
    input:
        splits=text_split_inputs,
        class_names=class_names_input,
        weights=text_weight_files,
    output:
        store="results/text/{dataset}/text.h5",
        report="results/text/{dataset}/text_report.json",
    log:
        "logs/class_text/{dataset}.log",
    wildcard_constraints:
        dataset=VIDEO_DATASETS,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(config["text"]["mem_mb"]),
        runtime=20,
    params:
        encoder=TEXT_ENCODER,
        encoder_params=json.dumps(resolved_params(TEXT_PARAMS), sort_keys=True),
        template=config["text"]["template"],
        splits=lambda w, input: folder_of(input.splits),
    shell:
        "python -m avzsl --quiet --threads {threads} class-text --splits {params.splits:q}"
        " --class-names {input.class_names:q} --encoder {params.encoder} --params {params.encoder_params:q}"
        " --template {params.template:q} --out {output.store:q} --report {output.report:q} > {log:q} 2>&1"


rule import_released_text:
    output:
        "results/text/{dataset}/text.h5",
    log:
        "logs/import_released_text/{dataset}.log",
    wildcard_constraints:
        dataset=RELEASED_DATASETS,
    conda:
        ENV
    params:
        root=lambda w: released(w)["root"],
        name=lambda w: released(w)["dataset"],
        feature_set=lambda w: DATASETS[w.dataset]["feature_sets"][0],
        legacy=lambda w: (
            "--legacy-reference-order" if released(w)["legacy_reference_order"] else ""
        ),
        npy=lambda w: (
            ["--npy", released(w)["text_npy"]] if released(w)["text_npy"] else []
        ),
        layout=lambda w: released(w)["layout"],
    shell:
        "python -m avzsl --quiet --threads {threads} import-released text --root {params.root:q}"
        " --dataset {params.name} --feature-set {params.feature_set} --layout {params.layout} {params.legacy}"
        " {params.npy:q} --out {output:q} > {log:q} 2>&1"
