"""Evidence for DAAN's Table II and its open readings (docs/models/daan.md): every configured variant and reading,
trained with several seeds on a synthetic benchmark (`evidence.generator`) at an official dataset's size, one job
per variant and seed; `snakemake daan_evidence` makes the table (mean ± std, and which differences from Base exceed the seed noise).
Not part of the default target."""


rule evidence_benchmark:
    output:
        directory("results/evidence/{bench}/benchmark"),
    log:
        "logs/evidence/{bench}/benchmark.log",
    benchmark:
        "benchmarks/evidence/{bench}/benchmark.tsv"
    wildcard_constraints:
        bench=EVIDENCE_BENCH_PATTERN,
    conda:
        ENV
    resources:
        mem_mb=mem_by_attempt(8000),
        runtime=60,
    params:
        dataset=EVIDENCE["dataset"],
        scale=EVIDENCE["scale"],
        generator=EVIDENCE["generator"],
    shell:
        "python -m avzsl --quiet evidence-benchmark --data {output:q} --dataset {params.dataset}"
        " --scale {params.scale} --generator {params.generator} > {log:q} 2>&1"


rule evidence_run:
    input:
        "results/evidence/{bench}/benchmark",
    output:
        "results/evidence/{bench}/runs/{variant}/seed{seed}.jsonl",
    log:
        "logs/evidence/{bench}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/evidence/{bench}/{variant}/seed{seed}.tsv"
    wildcard_constraints:
        bench=EVIDENCE_BENCH_PATTERN,
        variant=EVIDENCE_VARIANTS,
        seed=r"\d+",
    conda:
        ENV
    threads: config["evidence"]["threads"]
    resources:
        gpu=config["training"]["gpus"],
        mem_mb=mem_by_attempt(8000),
        # minutes: 15 s a step covers the slowest variant on a loaded 2-core machine (docs/models/daan.md)
        runtime=max(120, EVIDENCE["steps"] // 4),
    params:
        dataset=EVIDENCE["dataset"],
        scale=EVIDENCE["scale"],
        generator=EVIDENCE["generator"],
        steps=EVIDENCE["steps"],
        eval_every=EVIDENCE["eval_every"],
        variant_args=evidence_variant_args,
        batch_size=EVIDENCE["batch_size"],
        device=config["training"]["device"],
    shell:
        "python -m avzsl --quiet --threads {threads} --gpus {resources.gpu} evidence-run --data {input:q}"
        " --dataset {params.dataset} --scale {params.scale} --generator {params.generator}"
        " --variants {wildcards.variant} --first-seed {wildcards.seed} --seeds 1 --steps {params.steps}"
        " --eval-every {params.eval_every} {params.variant_args}"
        " --batch-size {params.batch_size} --device {params.device} --json-out {output:q} > {log:q} 2>&1"


rule evidence_table:
    input:
        evidence_runs,
    output:
        "results/evidence/{bench}/daan_evidence.md",
    log:
        "logs/evidence/{bench}/table.log",
    wildcard_constraints:
        bench=EVIDENCE_BENCH_PATTERN,
    conda:
        ENV
    params:
        dataset=EVIDENCE["dataset"],
        generator=EVIDENCE["generator"],
        steps=EVIDENCE["steps"],
        t=EVIDENCE["t"],
    shell:
        "python -m avzsl --quiet evidence-table {input:q} --dataset {params.dataset}"
        " --generator {params.generator} --steps {params.steps} --t {params.t} --out {output:q} > {log:q} 2>&1"
