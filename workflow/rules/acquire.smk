"""Acquire: videos plus a manifest (video_id, path, label, group) and a class-name table per dataset."""


rule demo_videos:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    log:
        "logs/demo_videos/{dataset}.log",
    benchmark:
        "benchmarks/demo_videos/{dataset}.tsv"
    wildcard_constraints:
        dataset=_names({"demo"}),
    conda:
        ENV
    threads: workflow.cores
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        spec=demo_spec,
    shell:
        "python -m training.cli --quiet --threads {threads} demo-data --manifest {output.manifest:q}"
        " --class-names {output.class_names:q} --spec {params.spec:q} --workers {threads} > {log:q} 2>&1"


rule scan_local_folder:
    output:
        manifest="resources/{dataset}/manifest.csv",
        class_names="resources/{dataset}/class_names.csv",
    log:
        "logs/scan_local_folder/{dataset}.log",
    wildcard_constraints:
        dataset=_names({"local"}),
    conda:
        ENV
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        root=lambda w: local_source(w)["root"],
        descriptions=lambda w: json.dumps(
            local_source(w)["descriptions"], sort_keys=True
        ),
    shell:
        "python -m training.cli --quiet --threads {threads} scan-folder --root {params.root:q}"
        " --manifest {output.manifest:q} --class-names {output.class_names:q}"
        " --descriptions {params.descriptions:q} > {log:q} 2>&1"
