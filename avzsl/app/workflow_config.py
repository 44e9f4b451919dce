"""The workflow configuration beyond its JSON schema.

``workflow/schemas/config.schema.yaml`` says what every key is, its type and its default; Snakemake's ``validate``
checks it and fills the defaults. What a schema cannot say is checked here, before anything runs: datasets that are
named but not defined, missing feature roots and folders, split files that overlap or leave a class without videos,
split recipes that leave fewer than two seen classes, unknown models and hyper-parameters, and the results tables.

Imports no torch unless the configuration overrides model hyper-parameters (then the model registry tells which
exist and of which kind), so that building the DAG of a default run stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path

from avzsl.fetching import local_path
from extractors.splits import SplitError, read_splits
from training.config import (
    ConfigError,
    available_models,
    check_hparam_types,
    merge_overrides,
    resolve_hparams,
)

SUMMARY = "summary"  # the table of the configured models, always built


def schema_error_in(exc: BaseException):
    """The jsonschema error behind an exception (Snakemake's ``validate`` raises its own error while handling it)."""
    while exc is not None:
        if hasattr(exc, "absolute_path") and hasattr(exc, "validator"):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def describe_schema_error(err) -> str:
    """One line for a :class:`jsonschema.ValidationError`: the key path and what is wrong with it."""
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)' w(?:as|ere) unexpected", err.message)
        known = sorted(err.schema.get("properties") or {})
        return (f"config: unknown key {', '.join(unknown) or err.message} in {where}"
                + (f"; known: {', '.join(known)}" if known else ""))
    return f"config: {where}: {err.message}"


class MissingDataConfigError(ConfigError):
    """A configured input that lies outside the project (a video folder, a download list, a released feature tree,
    official split files) is not on disk."""


def check_config(cfg: dict, dry_run: bool = False) -> list[str]:
    """Everything the schema cannot check, on a configuration whose defaults are filled.

    ``dry_run``: a configuration whose external data is not on this machine still plans (``snakemake -n``); the
    missing data is returned as warnings, that dataset's remaining data checks are skipped, and a real run stops
    with the same message as an error."""
    warnings = []
    for name in cfg["active_datasets"]:
        if name not in cfg["datasets"]:
            raise ConfigError(f"config: active_datasets names {name!r}, which is not defined under datasets "
                              f"(defined: {', '.join(sorted(cfg['datasets'])) or 'none'})")
        try:
            _check_dataset(name, cfg["datasets"][name], cfg)
        except MissingDataConfigError as e:
            if not dry_run:
                raise
            warnings.append(f"{e} (dry run: planned without it; a real run stops here)")
    _check_feature_sets(cfg)
    _check_text(cfg)
    _check_models(cfg)
    _check_tables(cfg)
    resolve_gpus(cfg)
    return warnings


def resolve_gpus(cfg: dict) -> None:
    """``gpus: auto`` becomes 1 on a machine with a GPU and 0 without, so that a GPU workstation uses its GPUs
    (one per job, by id) and a CPU machine runs everything on its CPUs. A cluster profile's ``set-resources``
    overrides the resource either way."""
    for section in ("extract", "training"):
        if cfg[section]["gpus"] == "auto":
            from avzsl.gpu_pool import device_ids

            cfg[section]["gpus"] = 1 if device_ids() else 0


def _check_text(cfg: dict) -> None:
    """The text encoder's parameters (keys, model file) when some active dataset embeds its class names here."""
    from extractors.text_encoders import TextEncoderError, check_params, encoder_spec, text_params

    if all(cfg["datasets"][n]["source"] == "released_avca" for n in cfg["active_datasets"]):
        return
    try:
        name, params = text_params(cfg["text"])
        params = check_params(name, params)
    except TextEncoderError as e:
        raise ConfigError(f"config: {e}") from None
    where = f"text.{encoder_spec(name).block}"
    if params.get("sha256") and not is_sha256(params["sha256"]):
        raise ConfigError(f"config: {where}.sha256 must be 64 hexadecimal digits, got {params['sha256']!r}")
    for key in ("path", "model_config"):
        if params.get(key) and not Path(params[key]).is_file():
            raise ConfigError(f"config: {where}.{key}: file not found: {params[key]}")


def _check_feature_sets(cfg: dict) -> None:
    """Every feature set used by an active dataset names a known backbone per modality, with parameters it declares
    and values they allow (read from the backbones' source: no torch); weight urls and digests are well-formed."""
    from extractors.backbone_params import check_backbone_params
    from extractors.feature_sets import BackboneError, normalize_feature_set
    from extractors.weights import file_param_keys

    used = {fs for n in cfg["active_datasets"] if cfg["datasets"][n]["source"] != "released_avca"
            for fs in cfg["datasets"][n]["feature_sets"]}
    for name in sorted(used & set(cfg["feature_sets"])):
        where = f"feature_sets.{name}"
        try:
            spec = normalize_feature_set(cfg["feature_sets"][name], where)
        except BackboneError as e:
            raise ConfigError(f"config: {e}") from None
        for m, entry in spec.items():
            key = f"{where}.{m}" if cfg["feature_sets"][name].get(m) else where
            params = entry["params"]
            try:
                check_backbone_params(entry["backbone"], params, key)
            except BackboneError as e:
                raise ConfigError(f"config: {e}") from None
            if cfg["extract"]["precision"] != "fp32" and params.get("mode") == "reference":
                raise ConfigError(f"config: extract.precision: {cfg['extract']['precision']} is refused with "
                                  f"{key}.params.mode: reference (the reference mode reproduces the original fp32 "
                                  "features); set extract.precision: fp32, or mode: clean")
            for param, (url_key, sha_key) in file_param_keys(params).items():
                if sha_key in params and not is_sha256(params[sha_key]):
                    raise ConfigError(f"config: {key}.params.{sha_key} must be 64 hexadecimal digits, got "
                                      f"{params[sha_key]!r}")
                if url_key in params and not (isinstance(params[url_key], str) and params[url_key]):
                    raise ConfigError(f"config: {key}.params.{url_key} must be a URL or a local path, got "
                                      f"{params[url_key]!r}")
                if params.get(url_key) and params.get(param):
                    raise ConfigError(f"config: {key}.params: give either {url_key} (fetched into resources/weights/) "
                                      f"or {param} (a local file), not both")


def _check_dataset(name: str, ds: dict, cfg: dict) -> None:
    where = f"datasets.{name}"
    if ds["source"] == "released_avca":
        _check_released(where, ds)
        return
    for fs in ds["feature_sets"]:
        if fs not in cfg["feature_sets"]:
            raise ConfigError(f"config: {where}.feature_sets names {fs!r}, which is not defined under feature_sets")
    if ds["source"] == "local":
        root = ds["local"]["root"]
        if not root or not Path(root).is_dir():
            raise MissingDataConfigError(f"config: {where}.local.root: video folder not found: {root!r}")
    mode = ds["splits"]["mode"]
    if ds["source"] == "download":
        lst = ds["download"]["list"]
        if lst and not Path(lst).is_file():
            raise MissingDataConfigError(f"config: {where}.download.list: download list not found: {lst!r}")
        if not lst and mode != "official":
            raise ConfigError(f"config: {where}.download.list: no download list; give one, or set "
                              f"{where}.splits.mode: official to download the official split's videos")
        if not lst and ds["splits"]["official"]["dataset"] == "UCF":
            raise ConfigError(f"config: {where}.splits.official.dataset: UCF101 has no YouTube ids; use source "
                              "ucf_archive")
    if ds["source"] == "ucf_archive":
        arc = ds["ucf_archive"]["archive"]
        if is_url(arc):
            pass  # fetched by rule fetch_ucf_archive
        elif not arc or not Path(arc).is_file():
            raise MissingDataConfigError(f"config: {where}.ucf_archive.archive: archive not found: {arc!r}")
        sha = ds["ucf_archive"]["sha256"]
        if sha and not is_sha256(sha):
            raise ConfigError(f"config: {where}.ucf_archive.sha256 must be 64 hexadecimal digits, got {sha!r}")
    official = ds["splits"]["official_dir"]
    if mode != "build" and official:
        raise ConfigError(f"config: {where}.splits.official_dir is for mode build (a local split folder); "
                          f"mode {mode} does not read it: leave one of the two out")
    if mode == "official":
        _check_official_source(where, ds["splits"]["official"])
    elif mode == "leakage_free":
        _check_leakage_settings(where, ds["splits"])
        _check_split_recipe(where, ds)
    elif official:
        if not Path(official).is_dir():
            raise MissingDataConfigError(f"config: {where}.splits.official_dir: folder not found: {official}")
        _check_splits(where, lambda: read_splits(official))
    else:
        _check_split_recipe(where, ds)


def is_url(text: str) -> bool:
    return bool(re.match(r"^(https?|file)://", text or ""))


def is_sha256(value) -> bool:
    return bool(re.fullmatch(r"[0-9a-fA-F]{64}", str(value or "")))


def _check_official_source(where: str, official: dict) -> None:
    src = official["source"]
    if not src:
        raise ConfigError(f"config: {where}.splits.official.source: give a base URL or a local folder")
    folder = local_path(src)
    if folder is not None:
        from extractors.sources.official import BENCHMARK

        if not ((folder / BENCHMARK).is_dir() or folder.name == BENCHMARK and folder.is_dir()):
            raise ConfigError(f"config: {where}.splits.official.source: no {BENCHMARK}/ folder in {src}")


def _check_leakage_settings(where: str, splits: dict) -> None:
    """A known backbone (or vocabulary), known vocabulary names for the sources, a readable override table."""
    from extractors.leakage import VOCABULARIES, LeakageError, read_overrides, vocabularies_for

    if not splits["backbone"]:
        raise ConfigError(f"config: {where}.splits.backbone: mode leakage_free needs the backbone whose "
                          "pre-training classes the unseen classes must avoid")
    try:
        vocabularies_for(splits["backbone"])
    except LeakageError as e:
        raise ConfigError(f"config: {where}.splits.backbone: {e}") from None
    unknown = sorted(set(splits["vocabularies"]) - set(VOCABULARIES))
    if unknown:
        raise ConfigError(f"config: {where}.splits.vocabularies: unknown vocabulary {unknown}; known: "
                          f"{sorted(VOCABULARIES)}")
    for name, src in splits["vocabularies"].items():
        path = None if src == "torchvision" else local_path(src)
        if path is not None and not path.is_file():
            raise ConfigError(f"config: {where}.splits.vocabularies.{name}: file not found: {src}")
    if splits["overrides"]:
        try:
            read_overrides(splits["overrides"])
        except LeakageError as e:
            raise ConfigError(f"config: {where}.splits.overrides: {e}") from None


def _check_released(where: str, ds: dict) -> None:
    from extractors.sources.released_avca import read_tree_splits

    rel = ds["released_avca"]
    if not rel["root"]:
        raise ConfigError(f"config: {where}.released_avca.root must name the released AVCA feature folder")
    root = Path(rel["root"])
    if not root.is_dir():
        raise MissingDataConfigError(f"config: {where}.released_avca.root: feature root not found: {root}")
    if not (root / rel["dataset"]).is_dir():
        raise MissingDataConfigError(f"config: {where}.released_avca.root: {root} has no {rel['dataset']}/ folder")
    bad = [f for f in ds["feature_sets"] if f not in ("main", "cls")]
    if bad:
        raise ConfigError(f"config: {where}.feature_sets: released AVCA feature sets are main and cls, not {bad}")
    for fs in ds["feature_sets"]:
        _check_splits(where, lambda fs=fs: read_tree_splits(root, rel["dataset"], fs))
    if rel["text_npy"] and not Path(rel["text_npy"]).is_file():
        raise ConfigError(f"config: {where}.released_avca.text_npy: file not found: {rel['text_npy']}")


def _check_split_recipe(where: str, ds: dict) -> None:
    """Splits built here must leave at least two seen classes: fewer cannot be trained or calibrated."""
    if ds["source"] == "demo":
        n_classes = ds["demo"]["n_visuals"] * ds["demo"]["n_sounds"]
    elif ds["source"] == "download" and not ds["download"]["list"]:
        return  # the official list, known once fetched
    elif ds["source"] == "download":
        from extractors.sources.download import read_download_list

        n_classes = len({r.label for r in read_download_list(ds["download"]["list"])})
    elif ds["source"] == "ucf_archive":
        n_classes = len(ds["ucf_archive"]["classes"]) or 101
    else:
        n_classes = sum(1 for p in Path(ds["local"]["root"]).iterdir() if p.is_dir())
    n_unseen = ds["splits"]["n_val_unseen"] + ds["splits"]["n_test_unseen"]
    if n_classes - n_unseen < 2:
        raise ConfigError(f"config: {where}.splits: {n_unseen} unseen classes (n_val_unseen + n_test_unseen) out of "
                          f"{n_classes} leave {n_classes - n_unseen} seen; at least two are needed")


def _check_splits(where: str, read) -> None:
    """Split files given as input are checked before anything runs (e.g. unseen classes that are also seen)."""
    try:
        read()
    except (SplitError, FileNotFoundError) as e:
        raise ConfigError(f"config: {where}: {e}") from None


# ------------------------------------------------------------------------------------------------ models
def run_overrides(cfg: dict, model: str) -> dict:
    """The overrides of one model's runs: those for every model, then the model's own."""
    training = cfg["training"]
    return merge_overrides(training["overrides"], training["model_overrides"].get(model))


def resolve_run_hparams(cfg: dict, model: str, ds: dict, feature_set: str) -> dict:
    try:
        return resolve_hparams(model, ds["hparams"], feature_set, run_overrides(cfg, model))
    except ConfigError as e:
        raise ConfigError(f"config: {e}") from None


def _check_models(cfg: dict) -> None:
    known = available_models()
    for model in cfg["models"]:
        if model not in known:
            raise ConfigError(f"config: models: unknown model {model!r}; available models: {', '.join(known)}")
    for model in cfg["training"]["model_overrides"]:
        if model not in known:
            raise ConfigError(f"config: training.model_overrides names {model!r}, which is not a model "
                              f"(known: {', '.join(known)})")
    for ds_name in cfg["active_datasets"]:
        ds = cfg["datasets"][ds_name]
        for fs in ds["feature_sets"]:
            for model in cfg["models"]:
                resolve_run_hparams(cfg, model, ds, fs)  # profiles exist, training settings are valid
    if _overrides_model_params(cfg):
        _check_model_overrides(cfg)


def _overrides_model_params(cfg: dict) -> bool:
    training = cfg["training"]
    return bool(training["overrides"].get("model")) or any(o.get("model")
                                                           for o in training["model_overrides"].values())


def _check_model_overrides(cfg: dict) -> None:
    """Overridden hyper-parameters exist and have their declared kind (the shipped profiles are checked by tests)."""
    from training.models import get_model_class

    for model in cfg["models"]:
        hparams = get_model_class(model).hparams
        training = cfg["training"]
        for where, ov in [("training.overrides", training["overrides"]),
                          (f"training.model_overrides.{model}", training["model_overrides"].get(model, {}))]:
            given = ov.get("model", {})
            unknown = sorted(set(given) - set(hparams))
            if unknown:
                raise ConfigError(f"config: {where}.model: model {model!r} has no hyper-parameter(s) {unknown}")
            try:
                check_hparam_types(hparams, given, f"{model} model ({where}.model)")
            except ConfigError as e:
                raise ConfigError(f"config: {e}") from None


# ------------------------------------------------------------------------------------------------ tables
def tables(cfg: dict) -> dict[str, dict]:
    """Every results table by name: the summary of the configured models, then ``report.tables``. Within a table
    grouped by type, the configured models come first, in their configured order (as the summary lists them), then
    the table's other models; a flat table keeps exactly its listed order (e.g. Table II, top to bottom)."""
    summary = {"title": cfg["report"]["title"], "models": list(cfg["models"]), "layout": "by_type",
               "in_default_target": True}
    out = {SUMMARY: summary}
    for name, table in cfg["report"]["tables"].items():
        models = table["models"]
        if table["layout"] == "by_type":
            models = [m for m in cfg["models"] if m in models] + [m for m in models if m not in cfg["models"]]
        out[name] = {**table, "models": models}
    return out


def default_tables(cfg: dict) -> list[str]:
    """Tables the default target builds: the summary, and each table marked so whose models are all configured."""
    configured = set(cfg["models"])
    return [name for name, t in tables(cfg).items() if t["in_default_target"] and set(t["models"]) <= configured]


def _check_tables(cfg: dict) -> None:
    if SUMMARY in cfg["report"]["tables"]:
        raise ConfigError(f"config: report.tables: {SUMMARY!r} is the table of the configured models; "
                          "give this table another name")
    known = available_models()
    for name, table in cfg["report"]["tables"].items():
        unknown = [m for m in table["models"] if m not in known]
        if unknown:
            raise ConfigError(f"config: report.tables.{name}.models: unknown model(s) {unknown}")
