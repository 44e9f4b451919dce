"""Evaluate: the stage-2 model on the test split with the β chosen in stage 1."""


rule evaluate:
    input:
        unpack(run_inputs),
        selection=rd.selection_path(RUN),
        model=rd.model_path(RUN),
    output:
        test=rd.test_path(RUN),
        predictions=rd.predictions_path(RUN),
    log:
        "logs/evaluate/{dataset}/{feature_set}/{model}/seed{seed}.log",
    wildcard_constraints:
        seed=r"\d+",
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=mem_by_attempt(config["training"]["mem_mb"]),
        runtime=30,
    params:
        run=run_config,
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} evaluate"
        " --run-config {params.run:q} --model-path {input.model:q} --selection {input.selection:q}"
        " --out {output.test:q} --predictions {output.predictions:q} > {log:q} 2>&1"
