"""Configuration checks, paths and run resolution: every Python helper of the workflow."""

import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(workflow.basedir)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.config import (  # noqa: E402
    ConfigError,
    available_models,
    check_hparam_types,
    load_model_config,
    resolve_hparams,
)
from training.data.released_avca import read_tree_splits  # noqa: E402
from training.data.splits import SplitError, read_splits, split_files  # noqa: E402

# Jobs run the workflow's own code (`python -m training.cli`) whether or not the package is installed.
shell.prefix(f"set -euo pipefail; export PYTHONPATH='{ROOT}'${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
ENV = "../../envs/avzsl.yaml"
NOTHING = "(?!x)x"  # a wildcard constraint no name matches


# ------------------------------------------------------------------------------------------ validation
def _deref(schema, defs):
    if "$ref" not in schema:
        return schema
    target = defs[schema["$ref"].removeprefix("#/$defs/")]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _fill_defaults(node, schema, defs):
    schema = _deref(schema, defs)
    if not isinstance(node, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _deref(sub, defs)
        if key not in node and "default" in sub:
            node[key] = json.loads(json.dumps(sub["default"]))
        if key in node:
            _fill_defaults(node[key], sub, defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in node:
            if key not in schema.get("properties", {}):
                _fill_defaults(node[key], extra, defs)


def _schema_errors(cfg, schema):
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(cfg))
    if not errors:
        return None
    err = jsonschema.exceptions.best_match(errors)
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)' w(?:as|ere) unexpected", err.message)
        return f"config: unknown key {', '.join(unknown) or err.message} in {where}"
    if err.validator == "required":
        return f"config: {where}: {err.message}"
    return f"config: {where}: {err.message}"


def validate_config(cfg):
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    message = _schema_errors(cfg, schema)
    if message:
        raise ConfigError(message)
    _fill_defaults(cfg, schema, schema.get("$defs", {}))
    message = _schema_errors(cfg, schema)
    if message:
        raise ConfigError(message)
    for name in cfg["active_datasets"]:
        if name not in cfg["datasets"]:
            raise ConfigError(f"config: active_datasets names {name!r}, which is not defined under datasets "
                              f"(defined: {', '.join(sorted(cfg['datasets'])) or 'none'})")
        _check_dataset(name, cfg["datasets"][name], cfg)
    _check_models(cfg)


def _check_dataset(name, ds, cfg):
    where = f"datasets.{name}"
    if ds["source"] == "released_avca":
        rel = ds["released_avca"]
        if not rel["root"]:
            raise ConfigError(f"config: {where}.released_avca.root must name the released AVCA feature folder")
        root = Path(rel["root"])
        if not root.is_dir():
            raise ConfigError(f"config: {where}.released_avca.root: feature root not found: {root}")
        if not (root / rel["dataset"]).is_dir():
            raise ConfigError(f"config: {where}.released_avca.root: {root} has no {rel['dataset']}/ folder")
        bad = [f for f in ds["feature_sets"] if f not in ("main", "cls")]
        if bad:
            raise ConfigError(f"config: {where}.feature_sets: released AVCA feature sets are main and cls, not {bad}")
        for fs in ds["feature_sets"]:
            _check_splits(where, lambda fs=fs: read_tree_splits(root, rel["dataset"], fs))
        if rel["text_npy"] and not Path(rel["text_npy"]).is_file():
            raise ConfigError(f"config: {where}.released_avca.text_npy: file not found: {rel['text_npy']}")
        return
    for fs in ds["feature_sets"]:
        if fs not in cfg["feature_sets"]:
            raise ConfigError(f"config: {where}.feature_sets names {fs!r}, which is not defined under feature_sets")
    if ds["source"] == "local":
        root = ds["local"]["root"]
        if not root or not Path(root).is_dir():
            raise ConfigError(f"config: {where}.local.root: video folder not found: {root!r}")
    official = ds["splits"]["official_dir"]
    if official:
        if not Path(official).is_dir():
            raise ConfigError(f"config: {where}.splits.official_dir: folder not found: {official}")
        _check_splits(where, lambda: read_splits(official))
    else:
        _check_split_recipe(where, ds)


def _check_split_recipe(where, ds):
    """Splits built here must leave at least two seen classes: fewer cannot be trained or calibrated."""
    if ds["source"] == "demo":
        n_classes = ds["demo"]["n_visuals"] * ds["demo"]["n_sounds"]
    else:
        n_classes = sum(1 for p in Path(ds["local"]["root"]).iterdir() if p.is_dir())
    n_unseen = ds["splits"]["n_val_unseen"] + ds["splits"]["n_test_unseen"]
    if n_classes - n_unseen < 2:
        raise ConfigError(f"config: {where}.splits: {n_unseen} unseen classes (n_val_unseen + n_test_unseen) out of "
                          f"{n_classes} leave {n_classes - n_unseen} seen; at least two are needed")


def _check_splits(where, read):
    """Split files given as input are checked before anything runs (e.g. unseen classes that are also seen)."""
    try:
        read()
    except (SplitError, FileNotFoundError) as e:
        raise ConfigError(f"config: {where}: {e}") from None


def _check_models(cfg):
    from training.models import get_model_class  # imports torch: only once, while the DAG is built

    for model in cfg["models"]:
        try:
            cls = get_model_class(model)
            load_model_config(model)
        except ValueError as e:
            raise ConfigError(f"config: models: {e}") from None
        for where, ov in [("training.overrides", cfg["training"]["overrides"]),
                          (f"training.model_overrides.{model}", cfg["training"]["model_overrides"].get(model, {}))]:
            unknown = sorted(set(ov.get("model", {})) - set(cls.hparams))
            if unknown:
                raise ConfigError(f"config: {where}.model: model {model!r} has no hyper-parameter(s) {unknown}")
    for model in cfg["training"]["model_overrides"]:
        if model not in cfg["models"] and model not in available_models():
            raise ConfigError(f"config: training.model_overrides names {model!r}, which is not a model "
                              f"(known: {', '.join(available_models())})")
    for ds_name in cfg["active_datasets"]:
        ds = cfg["datasets"][ds_name]
        for fs in ds["feature_sets"]:
            for model in cfg["models"]:
                hp = resolve_run_hparams(model, ds, fs, cfg)
                try:
                    check_hparam_types(get_model_class(model).hparams, hp["model"],
                                       f"{model} model (profile {ds['hparams']}, feature set {fs})")
                except ConfigError as e:
                    raise ConfigError(f"config: {e}") from None


def resolve_run_hparams(model, ds, feature_set, cfg=config):
    overrides = {"train": {**cfg["training"]["overrides"].get("train", {}),
                           **cfg["training"]["model_overrides"].get(model, {}).get("train", {})},
                 "model": {**cfg["training"]["overrides"].get("model", {}),
                           **cfg["training"]["model_overrides"].get(model, {}).get("model", {})}}
    try:
        return resolve_hparams(model, ds["hparams"], feature_set, overrides)
    except ConfigError as e:
        raise ConfigError(f"config: {e}") from None


validate_config(config)


# ------------------------------------------------------------------------------------------ datasets
DATASETS = {name: config["datasets"][name] for name in config["active_datasets"]}


def _names(source, official_splits=None):
    """Wildcard constraint matching the active datasets of the given sources (and, if set, with or without an
    official split folder)."""
    names = [re.escape(n) for n, d in DATASETS.items() if d["source"] in source
             and (official_splits is None or bool(d["splits"]["official_dir"]) == official_splits)]
    return "|".join(names) or NOTHING


VIDEO_DATASETS = _names({"demo", "local"})  # acquired and extracted here
RELEASED_DATASETS = _names({"released_avca"})
BUILT_SPLIT_DATASETS = _names({"demo", "local"}, official_splits=False)
OFFICIAL_SPLIT_DATASETS = _names({"demo", "local"}, official_splits=True)


def split_variant(dataset, feature_set):
    """Released trees have a split per feature set (main_split, cls_split); other sources one split."""
    return feature_set if DATASETS[dataset]["source"] == "released_avca" else "default"


def split_dir(dataset, feature_set):
    return f"results/splits/{dataset}/{split_variant(dataset, feature_set)}"


def split_outputs(folder):
    return [str(p) for p in split_files(folder)]


def features_path(dataset, feature_set):
    return f"results/features/{dataset}/{feature_set}/features.h5"


def text_path(dataset):
    return f"results/text/{dataset}/text.h5"


def shard_paths(wildcards):
    return [f"results/features/{wildcards.dataset}/{wildcards.feature_set}/shards/{i}.h5"
            for i in range(config["extract"]["shards"])]


def dataset_spec(wildcards):
    return DATASETS[wildcards.dataset]


def released(wildcards):
    return DATASETS[wildcards.dataset]["released_avca"]


def class_names_input(wildcards):
    return f"resources/{wildcards.dataset}/class_names.csv"


def text_split_inputs(wildcards):
    """Any one split folder of the dataset gives the class list (all_class.txt is shared by its variants)."""
    fs = DATASETS[wildcards.dataset]["feature_sets"][0]
    return split_outputs(split_dir(wildcards.dataset, fs))


# ------------------------------------------------------------------------------------------ runs
def run_dir(w):
    return f"results/runs/{w.dataset}/{w.feature_set}/{w.model}/seed{w.seed}"


def run_config(w):
    """The resolved configuration of one run, as JSON: identical for both stages and the evaluation."""
    ds = DATASETS[w.dataset]
    hp = resolve_run_hparams(w.model, ds, w.feature_set)
    cfg = {"model": w.model, "seed": int(w.seed), "train": hp["train"], "model_params": hp["model"],
           "dataset": w.dataset, "feature_set": w.feature_set, "profile": ds["hparams"],
           "features": features_path(w.dataset, w.feature_set), "splits": split_dir(w.dataset, w.feature_set),
           "text": text_path(w.dataset), "device": config["training"]["device"]}
    return json.dumps(cfg, sort_keys=True)


def run_inputs(w):
    return {"features": features_path(w.dataset, w.feature_set),
            "splits": split_outputs(split_dir(w.dataset, w.feature_set)),
            "text": text_path(w.dataset)}


def test_results(models):
    """test.json of every active dataset, feature set and seed for the given models."""
    return [f"results/runs/{ds}/{fs}/{m}/seed{s}/test.json" for ds in DATASETS
            for fs in DATASETS[ds]["feature_sets"] for m in models for s in config["seeds"]]


# Table II of the DAAN paper, top to bottom
ABLATION = ["daan_base", "daan_qdma", "daan_qdma_csgm_vc", "daan"]
# Table I: every model with a configuration, in the order of the configured models, then the rest by name;
# DAAN's ablation variants have their own table
TABLE1 = [m for m in config["models"] if m not in ABLATION[:-1]] + [
    m for m in available_models() if m not in config["models"] and m not in ABLATION[:-1]]

