"""Evidence for DAAN's Table II and its open readings (docs/models/daan.md): every configured variant and reading,
trained with several seeds on the synthetic benchmark at an official dataset's size, one job per variant and seed;
`snakemake daan_evidence` makes the table (mean ± std, and which differences from Base exceed the seed noise).
Not part of the default target."""


rule evidence_benchmark:
    output:
        directory("results/evidence/{dataset}/benchmark"),
    log:
        "logs/evidence/{dataset}/benchmark.log",
    benchmark:
        "benchmarks/evidence/{dataset}/benchmark.tsv"
    wildcard_constraints:
        dataset=EVIDENCE_DATASET,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(8000),
        runtime=60,
    params:
        dataset=EVIDENCE["dataset"],
        scale=EVIDENCE["scale"],
    shell:
        "python -m avzsl --quiet evidence-benchmark --data {output:q} --dataset {params.dataset}"
        " --scale {params.scale} > {log:q} 2>&1"


rule evidence_run:
    input:
        "results/evidence/{dataset}/benchmark",
    output:
        "results/evidence/{dataset}/runs/{variant}/seed{seed}.jsonl",
    log:
        "logs/evidence/{dataset}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/evidence/{dataset}/{variant}/seed{seed}.tsv"
    wildcard_constraints:
        dataset=EVIDENCE_DATASET,
        variant=EVIDENCE_VARIANTS,
        seed=r"\d+",
    conda:
        ENV
    threads: config["evidence"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=mem_by_attempt(8000),
        runtime=120,
    params:
        dataset=EVIDENCE["dataset"],
        scale=EVIDENCE["scale"],
        steps=EVIDENCE["steps"],
        batch_size=EVIDENCE["batch_size"],
        device=config["training"]["device"],
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} evidence-run --data {input:q}"
        " --dataset {params.dataset} --scale {params.scale} --variants {wildcards.variant}"
        " --first-seed {wildcards.seed} --seeds 1 --steps {params.steps} --batch-size {params.batch_size}"
        " --device {params.device} --json-out {output:q} > {log:q} 2>&1"


rule evidence_table:
    input:
        evidence_runs,
    output:
        "results/evidence/{dataset}/daan_evidence.md",
    log:
        "logs/evidence/{dataset}/table.log",
    wildcard_constraints:
        dataset=EVIDENCE_DATASET,
    conda:
        ENV
    params:
        dataset=EVIDENCE["dataset"],
        steps=EVIDENCE["steps"],
        t=EVIDENCE["t"],
    shell:
        "python -m avzsl --quiet evidence-table {input:q} --dataset {params.dataset} --steps {params.steps}"
        " --t {params.t} --out {output:q} > {log:q} 2>&1"
