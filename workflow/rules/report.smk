"""Report: every test result in one table."""


rule summary:
    input:
        test_results(config["models"]),
    output:
        csv="results/summary.csv",
        md="results/summary.md",
    params:
        title=config["report"]["title"],
        order=",".join(config["models"]),
    log:
        "logs/summary.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} report --csv {output.csv:q} --md {output.md:q}"
        " --title {params.title:q} --order {params.order} {input:q} > {log:q} 2>&1"


rule ablation:
    """DAAN's ablation (Table II): Base, + QDMA, + CSGM with the convergence rate only, full DAAN."""
    input:
        test_results(ABLATION),
    output:
        csv="results/ablation.csv",
        md="results/ablation.md",
    params:
        order=",".join(ABLATION),
    log:
        "logs/ablation.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} report --csv {output.csv:q} --md {output.md:q}"
        " --title 'DAAN ablation (Table II)' --order {params.order} --flat {input:q} > {log:q} 2>&1"


rule table1:
    """Every model on every active dataset and feature set, laid out like Table I of the DAAN paper."""
    input:
        test_results(TABLE1),
    output:
        csv="results/table1.csv",
        md="results/table1.md",
    params:
        order=",".join(TABLE1),
    log:
        "logs/table1.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} report --csv {output.csv:q} --md {output.md:q}"
        " --title 'Audio-visual (G)ZSL: all models (Table I layout)' --order {params.order} {input:q} > {log:q} 2>&1"
