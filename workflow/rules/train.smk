"""Train: stage 1 selects the epoch and the calibration on validation; stage 2 retrains on train + val up to that
epoch. Both read the same resolved run configuration."""


rule train_stage1:
    input:
        unpack(run_inputs),
    output:
        rd.selection_path(RUN),
    log:
        "logs/train_stage1/{dataset}/{feature_set}/{model}/seed{seed}.log",
    benchmark:
        "benchmarks/train_stage1/{dataset}/{feature_set}/{model}/seed{seed}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=mem_by_attempt(config["training"]["mem_mb"]),
        runtime=600,
    params:
        run=run_config,
        run_dir=stage_dir(1),
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} train --stage 1"
        " --run-config {params.run:q} --run-dir {params.run_dir:q} --out {output:q}"
        " --mem-mb {resources.mem_mb} > {log:q} 2>&1"


rule train_stage2:
    input:
        unpack(run_inputs),
        selection=rd.selection_path(RUN),
    output:
        rd.model_path(RUN),
    log:
        "logs/train_stage2/{dataset}/{feature_set}/{model}/seed{seed}.log",
    benchmark:
        "benchmarks/train_stage2/{dataset}/{feature_set}/{model}/seed{seed}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    conda:
        ENV
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=mem_by_attempt(config["training"]["mem_mb"]),
        runtime=600,
    params:
        run=run_config,
        run_dir=stage_dir(2),
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} train --stage 2"
        " --run-config {params.run:q} --run-dir {params.run_dir:q} --selection {input.selection:q}"
        " --model-out {output:q} --mem-mb {resources.mem_mb} > {log:q} 2>&1"
