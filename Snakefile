# avzsl: audio-visual (generalised) zero-shot video classification, from raw videos to a results table.
from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/acquire.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/summary.csv",
        "results/summary.md",
        # DAAN's ablation table whenever DAAN and its three variants are among the configured models
        ["results/ablation.md"] if set(ABLATION) <= set(config["models"]) else [],
    default_target: True


onsuccess:
    print(f"avzsl: results table at {Path('results/summary.md').resolve()}")
