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
        coverage=[f"--coverage={n}={p}" for n, p in coverage_files().items()],
    shell:
        "python -m training.cli --quiet --threads {threads} report --csv {output.csv:q} --md {output.md:q}"
        " --title {params.title:q} --order {params.order} {params.flat} {params.coverage:q} {input.results:q}"
        " > {log:q} 2>&1"


# a target per configured table, so that `snakemake table1` or `snakemake ablation` builds that table
for _name in config["report"]["tables"]:

    rule:
        name:
            _name
        input:
            table_outputs(_name),
