"""Evaluate: the stage-2 model on the test split with the β chosen in stage 1."""


rule evaluate:
    input:
        unpack(run_inputs),
        selection="results/runs/{dataset}/{feature_set}/{model}/seed{seed}/stage1/selection.json",
        model="results/runs/{dataset}/{feature_set}/{model}/seed{seed}/stage2/model.pt",
    output:
        "results/runs/{dataset}/{feature_set}/{model}/seed{seed}/test.json",
    params:
        run=run_config,
    wildcard_constraints:
        seed=r"\d+",
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=config["training"]["mem_mb"],
        runtime=30,
    log:
        "logs/evaluate/{dataset}/{feature_set}/{model}/seed{seed}.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} evaluate --run-config {params.run:q} --model-path {input.model:q} --selection {input.selection:q}"
        " --out {output:q} > {log:q} 2>&1"
