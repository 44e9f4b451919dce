"""Acquire: videos plus a manifest (video_id, path, label, group) and a class-name table per dataset."""


rule demo_videos:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    params:
        spec=lambda w: json.dumps(DATASETS[w.dataset]["demo"], sort_keys=True),
        out=lambda w: f"resources/{w.dataset}",
    wildcard_constraints:
        dataset=_names({"demo"}),
    threads: workflow.cores
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/demo_videos/{dataset}.log",
    benchmark:
        "benchmarks/demo_videos/{dataset}.tsv"
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} demo-data --out {params.out:q} --spec {params.spec:q} --workers {threads} > {log:q} 2>&1"


rule scan_local_folder:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    params:
        root=lambda w: DATASETS[w.dataset]["local"]["root"],
        descriptions=lambda w: json.dumps(DATASETS[w.dataset]["local"]["descriptions"], sort_keys=True),
        out=lambda w: f"resources/{w.dataset}",
    wildcard_constraints:
        dataset=_names({"local"}),
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/scan_local_folder/{dataset}.log",
    conda:
        ENV
    shell:
        "python -m training.cli --quiet --threads {threads} scan-folder --root {params.root:q} --out {params.out:q} --descriptions {params.descriptions:q} > {log:q} 2>&1"
