"""Paths and input functions: every Python helper of the workflow. Checks live in avzsl.app.workflow_config, file names
of the run directory in training.run_dir, the run configuration in training.config."""

import json
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(workflow.basedir)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from avzsl.app import workflow_config  # noqa: E402
from avzsl.fetching import local_path  # noqa: E402
from extractors.feature_sets import normalize_feature_set  # noqa: E402
from extractors.sources.local import (  # noqa: E402
    contents_digest as local_contents_digest,
)
from extractors.splits import read_class_list, split_files  # noqa: E402
from extractors.text_encoders import (  # noqa: E402
    resolved_params,
    text_params,
    weights_target,
)
from extractors.weights import (  # noqa: E402
    resolve_weight_params,
    weight_targets,
)
from training import run_dir as rd  # noqa: E402
from training.config import ConfigError, assemble_run_config  # noqa: E402

# Jobs run this checkout's code (`python -m avzsl <command>`) whether or not the package is installed.
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH='{ROOT}'${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
ENV = "../../envs/avzsl.yaml"
NOTHING = "(?!x)x"  # a wildcard constraint no name matches


def local_cores(cluster_share=2):
    """Threads of a rule that may use every core Snakemake has (--cores); under a cluster executor, which sets no
    total, a share of one node (set-threads in a profile changes it)."""
    try:
        return workflow.cores
    except WorkflowError:
        return cluster_share


def mem_by_attempt(mb):
    """The mem_mb resource of a rule: mb on the first attempt, mb × attempt when a failed job is retried
    (--retries, set by profiles/slurm), so a job killed for memory comes back with more.
    """
    return lambda wildcards, attempt: mb * attempt


# ------------------------------------------------------------------------------------------ configuration
try:
    validate(config, "../schemas/config.schema.yaml")  # fills every default
except WorkflowError as e:
    err = workflow_config.schema_error_in(e)
    if err is None:
        raise
    raise ConfigError(workflow_config.describe_schema_error(err)) from None
# a dry run plans a configuration whose external data is not on this machine (docs/report.md, "CI")
for _warning in workflow_config.check_config(
    config, dry_run=workflow.output_settings.dryrun
):
    print(f"avzsl: warning: {_warning}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ datasets
DATASETS = {name: config["datasets"][name] for name in config["active_datasets"]}


def _names(source, mode=None, official_dir=None):
    """Wildcard constraint matching the active datasets of the given sources (and, if set, of that split mode and
    with or without an official split folder)."""
    names = [
        re.escape(n)
        for n, d in DATASETS.items()
        if d["source"] in source
        and (mode is None or d["splits"]["mode"] == mode)
        and (official_dir is None or bool(d["splits"]["official_dir"]) == official_dir)
    ]
    return "|".join(names) or NOTHING


ACQUIRED = {
    "demo",
    "local",
    "download",
    "ucf_archive",
}  # videos acquired and extracted here
VIDEO_DATASETS = _names(ACQUIRED)
RELEASED_DATASETS = _names({"released_avca"})
BUILT_SPLIT_DATASETS = _names(ACQUIRED, mode="build", official_dir=False)
OFFICIAL_SPLIT_DATASETS = _names(ACQUIRED, mode="build", official_dir=True)
FETCHED_SPLIT_DATASETS = _names(ACQUIRED, mode="official")
LEAKAGE_FREE_DATASETS = _names(ACQUIRED, mode="leakage_free")
OFFICIAL_LIST_DATASETS = _names({"download"}, mode="official")


def split_variant(dataset, feature_set):
    """Released trees have a split per feature set (main_split, cls_split), a fetched official split is named by its
    variant (main, cls); other splits are "default"."""
    ds = DATASETS[dataset]
    if ds["source"] == "released_avca":
        return feature_set
    if ds["splits"]["mode"] == "official":
        return ds["splits"]["official"]["variant"]
    return "default"


def split_dir(dataset, feature_set):
    return f"results/splits/{dataset}/{split_variant(dataset, feature_set)}"


def dataset_split_dir(dataset):
    """The split folder of a dataset built from videos (one split for all its feature sets)."""
    return split_dir(dataset, DATASETS[dataset]["feature_sets"][0])


def split_outputs(folder):
    return [str(p) for p in split_files(folder)]


def folder_of(output):
    """The folder that holds a rule's (split) files: what the command is given to write them."""
    return str(Path(output[0]).parent)


def features_path(dataset, feature_set):
    return f"results/features/{dataset}/{feature_set}/features.h5"


def text_path(dataset):
    return f"results/text/{dataset}/text.h5"


def shard_paths(wildcards):
    return [
        f"results/features/{wildcards.dataset}/{wildcards.feature_set}/shards/{i}.h5"
        for i in range(config["extract"]["shards"])
    ]


def demo_spec(wildcards):
    return json.dumps(DATASETS[wildcards.dataset]["demo"], sort_keys=True)


def local_source(wildcards):
    return DATASETS[wildcards.dataset]["local"]


def local_folder_contents(wildcards):
    """A digest of the local folder's video files (relative names, sizes, modification times; no file is read).

    A parameter of scan_local_folder, so that adding, removing or replacing a video re-runs the scan and what
    follows: Snakemake watches only the path of a folder, and a folder's mtime misses changes in subfolders.
    """
    return local_contents_digest(local_source(wildcards)["root"])


def download_source(wildcards):
    return DATASETS[wildcards.dataset]["download"]


def download_list_file(wildcards):
    """The configured download list, else the one rule official_download_list derives from the official split."""
    return (
        download_source(wildcards)["list"]
        or f"resources/{wildcards.dataset}/download/official_list.csv"
    )


def download_options(wildcards):
    """What `avzsl download --options` takes: the dataset's download block less the workflow's own keys."""
    d = download_source(wildcards)
    skip = ("list", "shards", "slots", "runtime", "descriptions")
    return json.dumps({k: v for k, v in d.items() if k not in skip}, sort_keys=True)


def download_shards(wildcards, kind):
    n = download_source(wildcards)["shards"]
    suffix = ".csv" if kind == "manifest" else ".unavailable.tsv"
    return [
        f"resources/{wildcards.dataset}/download/shard_{i}{suffix}" for i in range(n)
    ]


def coverage_split_folder(dataset):
    """The split that coverage is counted against: the official one (fetched or given as official_dir), else none."""
    ds = DATASETS[dataset]
    if ds["splits"]["mode"] == "official":
        return dataset_split_dir(dataset)
    return ds["splits"]["official_dir"]


def coverage_split_inputs(wildcards):
    """A fetched official split is made by the workflow, so coverage waits for it."""
    if DATASETS[wildcards.dataset]["splits"]["mode"] == "official":
        return split_outputs(dataset_split_dir(wildcards.dataset))
    return []


def split_dir_option(wildcards, split_files):
    """Coverage per split needs the official split folder (the fetched split's files where the workflow makes them,
    else a configured folder); without one it is per class only."""
    folder = (
        folder_of(split_files)
        if split_files
        else coverage_split_folder(wildcards.dataset)
    )
    return ["--split-dir", folder] if folder else []


def coverage_files():
    """The coverage.tsv of every active dataset that has one (downloaded, or UCF101 against an official split):
    the results table states it."""
    out = {}
    for name, ds in DATASETS.items():
        if ds["source"] == "download" or (
            ds["source"] == "ucf_archive" and coverage_split_folder(name)
        ):
            out[name] = f"resources/{name}/coverage.tsv"
    return out


UCF_COVERAGE_DATASETS = (
    "|".join(
        re.escape(n) for n in coverage_files() if DATASETS[n]["source"] == "ucf_archive"
    )
    or NOTHING
)


def ucf_archive_file(wildcards):
    """A local archive as is; one given by URL is fetched once by rule fetch_ucf_archive."""
    arc = DATASETS[wildcards.dataset]["ucf_archive"]["archive"]
    if workflow_config.is_url(arc):
        name = Path(arc.split("?")[0]).name or "UCF101.rar"
        return f"resources/{wildcards.dataset}/archive/{name}"
    return arc


def ucf_classes(wildcards):
    """The classes to keep: configured, else the official split's all_class.txt (official_dir, in it or its parent;
    a fetched split gives it as an input, ucf_class_list), else all."""
    ds = DATASETS[wildcards.dataset]
    if ds["ucf_archive"]["classes"]:
        return ds["ucf_archive"]["classes"]
    official = ds["splits"]["official_dir"]
    for folder in (Path(official), Path(official).parent) if official else ():
        f = folder / "all_class.txt"
        if f.is_file():
            return read_class_list(f)
    return []


def ucf_class_list(wildcards):
    """The fetched official split's class list, when the classes are neither configured nor in official_dir."""
    ds = DATASETS[wildcards.dataset]
    if ds["splits"]["mode"] == "official" and not ds["ucf_archive"]["classes"]:
        return [f"{dataset_split_dir(wildcards.dataset)}/all_class.txt"]
    return []


def released(wildcards):
    return DATASETS[wildcards.dataset]["released_avca"]


NOT_RECIPE = (
    "official_dir",
    "cover_factors",
    "mode",
    "official",
    "backbone",
    "vocabularies",
    "overrides",
    "keep_sources_apart",
)


def split_recipe(wildcards):
    """The split builder's recipe: the dataset's split settings less those that are not part of it."""
    recipe = {
        k: v
        for k, v in DATASETS[wildcards.dataset]["splits"].items()
        if k not in NOT_RECIPE
    }
    return json.dumps(recipe, sort_keys=True)


def leakage_overrides(wildcards):
    path = DATASETS[wildcards.dataset]["splits"]["overrides"]
    return [path] if path else []


def leakage_vocabulary_files(wildcards):
    """The vocabularies given as local files: inputs, so that an edited file rebuilds the split."""
    sources = DATASETS[wildcards.dataset]["splits"]["vocabularies"].values()
    paths = [local_path(s) for s in sources if s != "torchvision"]
    return [str(p) for p in paths if p is not None]


def official_class_names(dataset):
    variant = DATASETS[dataset]["splits"]["official"]["variant"]
    return f"resources/{dataset}/official_{variant}_class_names.csv"


def class_names_input(wildcards):
    """The text to embed per class: the official split's own table (as the reference embedded it), else the one
    written when the videos were acquired."""
    if DATASETS[wildcards.dataset]["splits"]["mode"] == "official":
        return official_class_names(wildcards.dataset)
    return f"resources/{wildcards.dataset}/class_names.csv"


def text_split_inputs(wildcards):
    """Any one split folder of the dataset gives the class list (all_class.txt is shared by its variants)."""
    return split_outputs(dataset_split_dir(wildcards.dataset))


TEXT_ENCODER, TEXT_PARAMS = text_params(config["text"])


def text_weight_files(wildcards):
    """The text encoder's model file when it is given by url (fetched, with its record beside it, by rule
    fetch_text_weights)."""
    target = weights_target(TEXT_PARAMS)
    return [target["path"]] if target else []


def text_fetch_target(wildcards):
    target = weights_target(TEXT_PARAMS)
    if target is None or Path(target["path"]).name != wildcards.filename:
        raise WorkflowError(f"text: no url for a model file named {wildcards.filename}")
    return target


def feature_set_spec(name):
    """The feature set per modality: {"audio": {backbone, params}, "video": {...}}."""
    return normalize_feature_set(config["feature_sets"][name], f"feature_sets.{name}")


def extraction_feature_set(wildcards):
    """What extraction gets: the feature set with fetched weight files in place of url/sha256."""
    spec = feature_set_spec(wildcards.feature_set)
    return json.dumps(
        resolve_weight_params(wildcards.feature_set, spec), sort_keys=True
    )


def weight_files(wildcards):
    targets = weight_targets(
        wildcards.feature_set, feature_set_spec(wildcards.feature_set)
    )
    return list(targets)


def weight_records(wildcards):
    return [f"{p}.json" for p in weight_files(wildcards)]


def weight_record_args(records):
    return [a for p in records for a in ("--weights-record", p)]


def weight_target(wildcards):
    targets = weight_targets(
        wildcards.feature_set, feature_set_spec(wildcards.feature_set)
    )
    path = f"resources/weights/{wildcards.feature_set}/{wildcards.part}/{wildcards.filename}"
    if path not in targets:
        raise WorkflowError(
            f"feature_sets.{wildcards.feature_set}: no url names {path}"
        )
    return targets[path]


def weight_where(wildcards):
    """The configuration key a fetch error names."""
    t = weight_target(wildcards)
    part = "" if t["part"] == "av" else f".{t['part']}"
    param = "" if t["param"] == "weights" else f".{t['param']}"
    return f"feature_sets.{wildcards.feature_set}{part}.params{param}"


def fetch_options(retries=None):
    """The limits of config key fetch as options of a fetching command; ``retries`` overrides fetch.retries."""
    f = config["fetch"]
    tries = f["retries"] if retries is None else retries
    deadline = 0 if f["deadline"] is None else f["deadline"]  # 0: none
    return (
        f"--retries {tries} --backoff {f['backoff']} --timeout {f['timeout']} --min-rate {f['min_rate']}"
        f" --rate-window {f['rate_window']} --deadline {deadline} --retry-after-cap {f['retry_after_cap']}"
    )


def weight_check(wildcards):
    """Options that have the fetched file checked as the file parameter it fills (a checkpoint's keys)."""
    t = weight_target(wildcards)
    return f"--backbone {t['backbone']} --param {t['param']}"


def max_seconds_option(wildcards):
    limit = config["extract"]["max_seconds"]
    return [] if limit is None else ["--max-seconds", str(limit)]


# ------------------------------------------------------------------------------------------ runs
RUN = rd.run_path("{dataset}", "{feature_set}", "{model}", "{seed}")


def run_dir(w):
    return rd.run_path(w.dataset, w.feature_set, w.model, w.seed)


def stage_dir(stage):
    return lambda w: rd.stage_path(run_dir(w), stage)


def run_config(w):
    """The resolved configuration of one run, as JSON: identical for both stages and the evaluation."""
    ds = DATASETS[w.dataset]
    cfg = assemble_run_config(
        w.model,
        int(w.seed),
        w.dataset,
        w.feature_set,
        ds["hparams"],
        features_path(w.dataset, w.feature_set),
        split_dir(w.dataset, w.feature_set),
        text_path(w.dataset),
        config["training"]["device"],
        workflow_config.run_overrides(config, w.model),
    )
    return json.dumps(cfg.to_dict(), sort_keys=True)


def run_inputs(w):
    stores = [features_path(w.dataset, w.feature_set), text_path(w.dataset)]
    return {
        "features": stores[0],
        "splits": split_outputs(split_dir(w.dataset, w.feature_set)),
        "text": stores[1],
        "quarantined": quarantined_copies(stores),
    }


def quarantined_copies(paths):
    """The ``<store>.damaged`` copies that avzsl.common.quarantine() moved aside (stamped with the time it did).

    A job that finds a store damaged moves it aside and fails; Snakemake then removes that job's outputs only. The
    store is now a missing intermediate file, and Snakemake does not rebuild a missing intermediate whose other
    consumers (the other seeds and models, stage 2, the evaluation) are up to date: the next run would say "Nothing
    to be done". As an input of every consumer, the aside copy is newer than their outputs, so the next plain run
    rebuilds the store and re-runs what read it. The copy stays an input while it exists (kept for inspection):
    deleting it changes the consumers' set of inputs, which makes Snakemake re-run them once.
    """
    return [f"{p}.damaged" for p in paths if Path(f"{p}.damaged").exists()]


def test_results(models):
    """The test result of every active dataset, feature set and seed for the given models."""
    return [
        rd.test_path(rd.run_path(ds, fs, m, s))
        for ds in DATASETS
        for fs in DATASETS[ds]["feature_sets"]
        for m in models
        for s in config["seeds"]
    ]


# ------------------------------------------------------------------------------------------ tables
TABLES = workflow_config.tables(config)


def table_results(wildcards):
    return test_results(TABLES[wildcards.table]["models"])


def table_outputs(name):
    return [f"results/{name}.csv", f"results/{name}.md"]


# ------------------------------------------------------------------------------------------ the HTML report
# rule report_files writes one folder per report category under REPORT (training/report/)
REPORT = "results/report"
RUN_PATTERN = "{dataset,[^/]+}/{feature_set,[^/]+}/{model,[^/]+}/seed{seed,[0-9]+}.svg"


def report_data(wildcards=None):
    """Per dataset and feature set: the media extraction could not use (datasets extracted here) and the coverage
    the results table states (coverage_files); empty where the rules that write them do not apply.
    """
    coverage = coverage_files()
    data = {}
    for ds, d in DATASETS.items():
        extracted = re.fullmatch(VIDEO_DATASETS, ds)
        for fs in d["feature_sets"]:
            data[f"{ds}/{fs}"] = {
                "failed_media": (
                    f"results/features/{ds}/{fs}/failed_media.tsv" if extracted else ""
                ),
                "coverage": coverage.get(ds, ""),
            }
    return data


def report_data_files(wildcards):
    return [p for v in report_data().values() for p in v.values() if p]


def report_data_json(input):
    """What `avzsl report-files --data` takes: report_data() with the rule's data inputs (the same paths)."""
    files = set(input.data)
    data = {
        key: {kind: path if path in files else "" for kind, path in v.items()}
        for key, v in report_data().items()
    }
    return json.dumps(data, sort_keys=True)


def report_tables_json(input):
    """What `avzsl report-files --tables` takes: each table's csv (the rule's tables input) and its layout."""
    return json.dumps(
        {
            Path(csv).stem: {
                "csv": csv,
                **{k: TABLES[Path(csv).stem][k] for k in ("title", "models", "layout")},
            }
            for csv in input.tables
        },
        sort_keys=True,
    )


# DAAN's evidence (workflow/rules/evidence.smk)
EVIDENCE = config["evidence"]
# results/evidence/<bench>/: the dataset's name for the first generator (as before there were two), else suffixed
EVIDENCE_BENCH = EVIDENCE["dataset"] + (
    "" if EVIDENCE["generator"] == "synthetic" else f"-{EVIDENCE['generator']}"
)
EVIDENCE_BENCH_PATTERN = re.escape(EVIDENCE_BENCH)
EVIDENCE_VARIANTS = "|".join(re.escape(v) for v in EVIDENCE["variants"])


def evidence_variant_args(wildcards):
    """The control variant's factor, for its jobs only: changing it reruns no other run."""
    if wildcards.variant != "qdma.lr_scaled":
        return ""
    return f"--qdma-lr-scale {EVIDENCE['qdma_lr_scale']}"


def evidence_runs(wildcards):
    ev = EVIDENCE
    return [
        f"results/evidence/{wildcards.bench}/runs/{v}/seed{s}.jsonl"
        for v in ev["variants"]
        for s in range(ev["first_seed"], ev["first_seed"] + ev["seeds"])
    ]
