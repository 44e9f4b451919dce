"""Report: the results tables, all built by one rule from their models' test results: `summary` (the configured
models) and the tables of report.tables in the configuration (Table I and DAAN's Table II ablation by default);
`snakemake <table name>` builds one of the latter."""


rule summary:
    input:
        results=table_results,
        coverage=list(coverage_files().values()),
    output:
        csv="results/{table}.csv",
        md="results/{table}.md",
    log:
        "logs/summary/{table}.log",
    wildcard_constraints:
        table="|".join(re.escape(t) for t in TABLES),
    conda:
        ENV
    params:
        title=lambda w: TABLES[w.table]["title"],
        order=lambda w: ",".join(TABLES[w.table]["models"]),
        flat=lambda w: "--flat" if TABLES[w.table]["layout"] == "flat" else "",
        coverage_datasets=list(coverage_files()),
    shell:
        "python -m avzsl --quiet --threads {threads} summary --csv {output.csv:q} --md {output.md:q}"
        " --title {params.title:q} --order {params.order} {params.flat} --coverage {input.coverage:q}"
        " --coverage-datasets {params.coverage_datasets:q} -- {input.results:q}"
        " > {log:q} 2>&1"


# a target per configured table, so that `snakemake table1` or `snakemake ablation` builds that table
for _name in config["report"]["tables"]:

    rule:
        name:
            _name
        input:
            table_outputs(_name),


# ------------------------------------------------------------------------------------------ snakemake --report
# The figures and pages of the HTML report (training/report/), one folder per report category. Part of the default
# target, so that `snakemake` then `snakemake --report report.html` gives the full report (docs/report.md).
rule report_files:
    input:
        tests=test_results(config["models"]),
        predictions=[
            rd.predictions_path(Path(p).parent) for p in test_results(config["models"])
        ],
        tables=[
            f"results/{name}.csv" for name in workflow_config.default_tables(config)
        ],
        data=report_data_files,
    output:
        tables=report(
            directory(f"{REPORT}/tables"),
            caption="../report/tables.rst",
            category="1. Results tables",
            patterns=["{table}.html"],
            labels={"table": "{table}"},
        ),
        curves=report(
            directory(f"{REPORT}/curves"),
            caption="../report/curves.rst",
            category="2. Validation curves",
            subcategory="{dataset} · {feature_set}",
            patterns=[RUN_PATTERN],
            labels={"model": "{model}", "seed": "{seed}"},
        ),
        confusion=report(
            directory(f"{REPORT}/confusion"),
            caption="../report/confusion.rst",
            category="3. Unseen-class confusion",
            subcategory="{dataset} · {feature_set}",
            patterns=[RUN_PATTERN],
            labels={"model": "{model}", "seed": "{seed}"},
        ),
        maps=report(
            directory(f"{REPORT}/maps"),
            caption="../report/maps.rst",
            category="4. Test embeddings (t-SNE)",
            subcategory="{dataset} · {feature_set}",
            patterns=[RUN_PATTERN],
            labels={"model": "{model}", "seed": "{seed}"},
        ),
        data=report(
            directory(f"{REPORT}/data"),
            caption="../report/data.rst",
            category="5. Data coverage and failed media",
            patterns=["{dataset,[^.]+}.{feature_set}.html"],
            labels={"dataset": "{dataset}", "feature set": "{feature_set}"},
        ),
        runs=report(
            directory(f"{REPORT}/runs"),
            caption="../report/runs.rst",
            category="6. Run configurations",
            patterns=["{dataset,[^.]+}.{feature_set}.html"],
            labels={"dataset": "{dataset}", "feature set": "{feature_set}"},
        ),
    log:
        "logs/report_files.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=mem_by_attempt(2000),
        runtime=30,
    params:
        out=lambda w, output: folder_of(output),
        data=lambda w, input: report_data_json(input),
        tables=lambda w, input: report_tables_json(input),
    shell:
        "python -m avzsl --quiet --threads {threads} report-files {input.tests:q}"
        " --out-dir {params.out:q} --tables {params.tables:q} --data {params.data:q}"
        " --predictions {input.predictions:q} > {log:q} 2>&1"
