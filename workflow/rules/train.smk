"""Train: stage 1 selects the epoch and the calibration on validation; stage 2 retrains on train + val up to that
epoch. Both read the same resolved run configuration."""


rule train_stage1:
    input:
        unpack(run_inputs),
    output:
        "results/runs/{dataset}/{feature_set}/{model}/seed{seed}/stage1/selection.json",
    params:
        run=run_config,
        run_dir=lambda w: f"{run_dir(w)}/stage1",
    wildcard_constraints:
        seed=r"\d+",
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=config["training"]["mem_mb"],
        runtime=600,
    log:
        "logs/train_stage1/{dataset}/{feature_set}/{model}/seed{seed}.log",
    benchmark:
        "benchmarks/train_stage1/{dataset}/{feature_set}/{model}/seed{seed}.tsv"
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} train --stage 1 --run-config {params.run:q} --run-dir {params.run_dir:q} --out {output:q}"
        " --mem-mb {resources.mem_mb} > {log:q} 2>&1"


rule train_stage2:
    input:
        unpack(run_inputs),
        selection="results/runs/{dataset}/{feature_set}/{model}/seed{seed}/stage1/selection.json",
    output:
        "results/runs/{dataset}/{feature_set}/{model}/seed{seed}/stage2/model.pt",
    params:
        run=run_config,
        run_dir=lambda w: f"{run_dir(w)}/stage2",
    wildcard_constraints:
        seed=r"\d+",
    threads: config["training"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=config["training"]["mem_mb"],
        runtime=600,
    log:
        "logs/train_stage2/{dataset}/{feature_set}/{model}/seed{seed}.log",
    benchmark:
        "benchmarks/train_stage2/{dataset}/{feature_set}/{model}/seed{seed}.tsv"
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} train --stage 2 --run-config {params.run:q} --run-dir {params.run_dir:q}"
        " --selection {input.selection:q} --mem-mb {resources.mem_mb} > {log:q} 2>&1"
