# avzsl: audio-visual (generalised) zero-shot video classification, from raw videos to a results table.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/evidence.smk"


rule all:
    default_target: True
    input:
        # the summary of the configured models, and each table marked in_default_target whose models all are
        [
            path
            for name in workflow_config.default_tables(config)
            for path in table_outputs(name)
        ],
        # the figures and pages of `snakemake --report` (workflow/rules/report.smk)
        rules.report_files.output,


# DAAN's Table II variants and open readings over several seeds (workflow/rules/evidence.smk); not in `all`
rule daan_evidence:
    input:
        f"results/evidence/{EVIDENCE_BENCH}/daan_evidence.md",


onsuccess:
    print(f"avzsl: results table at {Path('results/summary.md').resolve()}")
