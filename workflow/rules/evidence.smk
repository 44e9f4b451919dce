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
        bench=EVIDENCE_ARGS,
    shell:
        "{params.bench} --prepare --data {output:q} > {log:q} 2>&1"


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
        bench=EVIDENCE_ARGS,
    shell:
        "{params.bench} --data {input:q} --variants {wildcards.variant} --first-seed {wildcards.seed} --seeds 1"
        " --threads {threads} --json-out {output:q} > {log:q} 2>&1"


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
        bench=EVIDENCE_ARGS,
    shell:
        "{params.bench} --from-runs {input:q} --out {output:q} > {log:q} 2>&1"
