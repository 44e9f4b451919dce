"""Run configuration: model hyper-parameters per dataset profile, training settings, and their resolution.

Each model has ``training/model_configs/<model>.yaml``::

    train:   {...}              # training settings shared by every dataset (TrainConfig fields)
    model:   {...}              # hyper-parameters shared by every dataset (the model's declared hparams)
    profiles:
      ucf/main: {train: {...}, model: {...}}   # per dataset profile and feature kind
      demo: {...}

A run resolves ``defaults <- profile <- overrides`` once; the result, with seed and code version, is written into the
run directory and is the only configuration the run reads. This module imports no torch so that the workflow can
resolve configurations while it builds the DAG.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"  # package data: found installed or not


class ConfigError(ValueError):
    pass


@dataclass
class TrainConfig:
    epochs: int = 50  # stage-1 epochs (stage 2 trains up to the selected epoch)
    n_batches: int = 500  # batches per epoch (an epoch is not a pass over the data)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    scheduler: str = "plateau"  # "plateau": ReduceLROnPlateau on validation HM; "none"
    patience: int = 3
    factor: float = 0.1
    beta_min: float = 0.0  # calibrated-stacking grid
    beta_max: float = 3.0
    beta_steps: int = 16
    max_steps: int | None = None  # cap on sequence steps in training: random crops (models that read sequences)
    eval_max_steps: int | None = None  # cap in evaluation: centre crops (None: the training cap)
    eval_batch_size: int = 2048

    @classmethod
    def from_dict(cls, d: dict, where: str = "train") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown training setting(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**d)
        if cfg.scheduler not in ("plateau", "none"):
            raise ConfigError(f"{where}.scheduler must be 'plateau' or 'none', got {cfg.scheduler!r}")
        for name in ("epochs", "n_batches", "batch_size", "beta_steps", "eval_batch_size"):
            _require(_is_int(getattr(cfg, name)) and getattr(cfg, name) >= 1, where, name, "a positive integer",
                     getattr(cfg, name))
        _require(_is_int(cfg.patience) and cfg.patience >= 0, where, "patience", "a non-negative integer",
                 cfg.patience)
        for name in ("max_steps", "eval_max_steps"):
            v = getattr(cfg, name)
            _require(v is None or (_is_int(v) and v >= 1), where, name, "a positive integer or null", v)
        _require(_is_number(cfg.lr) and cfg.lr > 0, where, "lr", "a positive number", cfg.lr)
        _require(_is_number(cfg.weight_decay) and cfg.weight_decay >= 0, where, "weight_decay",
                 "a non-negative number", cfg.weight_decay)
        _require(_is_number(cfg.factor) and 0 < cfg.factor < 1, where, "factor", "a number between 0 and 1",
                 cfg.factor)
        for name in ("beta_min", "beta_max"):
            _require(_is_number(getattr(cfg, name)), where, name, "a number", getattr(cfg, name))
        _require(cfg.beta_min <= cfg.beta_max, where, "beta_max", f"at least beta_min ({cfg.beta_min})",
                 cfg.beta_max)
        return cfg


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is an int to Python, not to a user


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _require(ok: bool, where: str, name: str, what: str, value) -> None:
    if not ok:
        raise ConfigError(f"{where}.{name} must be {what}, got {value!r}")


def check_hparam_types(declared: dict, given: dict, where: str) -> None:
    """Each given hyper-parameter has the kind of its declared default: a number for a number (never a boolean), a
    boolean for a boolean, a string for a string, a list for a list. Defaults of None accept anything."""
    kinds = ((bool, lambda v: isinstance(v, bool), "true or false"),
             ((int, float), _is_number, "a number"),
             (str, lambda v: isinstance(v, str), "a string"),
             ((list, tuple), lambda v: isinstance(v, (list, tuple)), "a list"))
    for name, value in given.items():
        default = declared.get(name)
        for types, accepts, what in kinds:
            if isinstance(default, types):
                _require(accepts(value), where, name, what, value)
                break


@dataclass
class RunConfig:
    model: str
    seed: int
    train: TrainConfig
    model_params: dict = field(default_factory=dict)
    dataset: str = ""
    feature_set: str = ""
    profile: str = ""
    features: str = ""
    splits: str = ""
    text: str = ""
    device: str = "auto"
    deterministic: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["train"] = TrainConfig.from_dict(d.get("train", {}))
        return cls(**d)


def available_models(config_dir: Path = MODEL_CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in Path(config_dir).glob("*.yaml"))


def load_model_config(model: str, config_dir: Path = MODEL_CONFIG_DIR, _seen: tuple = ()) -> dict:
    """A model's configuration; ``extends: <other model>`` starts from that model's file (its ``train``, ``model``
    and ``profiles``), then applies this file's values on top, profile by profile."""
    path = Path(config_dir) / f"{model}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown model {model!r}: no {path.name} in {path.parent}; "
                          f"available models: {', '.join(available_models(config_dir))}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    unknown = sorted(set(data) - {"train", "model", "profiles", "description", "extends"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}")
    parent = data.pop("extends", None)
    if parent:
        if parent in _seen or parent == model:
            raise ConfigError(f"{path}: 'extends' forms a cycle through {parent!r}")
        base = load_model_config(parent, config_dir, (*_seen, model))
        merged = {"train": {**(base.get("train") or {}), **(data.get("train") or {})},
                  "model": {**(base.get("model") or {}), **(data.get("model") or {})},
                  "profiles": copy.deepcopy(base.get("profiles") or {})}
        for key, prof in (data.get("profiles") or {}).items():
            old = merged["profiles"].setdefault(key, {})
            for section in ("train", "model"):
                if section in prof:
                    old[section] = {**(old.get(section) or {}), **prof[section]}
        merged["description"] = data.get("description", base.get("description", ""))
        data = merged
    return data


def resolve_hparams(model: str, profile: str, feature_set: str = "", overrides: dict | None = None,
                    config_dir: Path = MODEL_CONFIG_DIR) -> dict:
    """``{"train": {...}, "model": {...}}`` for ``model`` on a dataset profile and feature set.

    Profile lookup: ``<profile>/<feature_set>``, then ``<profile>``; ``default`` uses the shared values only."""
    data = load_model_config(model, config_dir)
    out = {"train": copy.deepcopy(data.get("train") or {}), "model": copy.deepcopy(data.get("model") or {})}
    profiles = data.get("profiles") or {}
    if profile != "default":
        key = next((k for k in (f"{profile}/{feature_set}", profile) if k in profiles), None)
        if key is None:
            raise ConfigError(f"model {model!r} has no hyper-parameter profile {profile!r} "
                              f"(for feature set {feature_set!r}); known: {', '.join(sorted(profiles))}, default")
        _merge(out, profiles[key], f"{model}.profiles.{key}")
    if overrides:
        _merge(out, overrides, f"overrides for {model}")
    TrainConfig.from_dict(out["train"], where=f"{model} train settings")
    return out


def _merge(base: dict, extra: dict, where: str) -> None:
    unknown = sorted(set(extra) - {"train", "model"})
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {unknown}; expected 'train' and/or 'model'")
    for section in ("train", "model"):
        base[section].update(extra.get(section) or {})


def merge_overrides(*layers: dict | None) -> dict:
    """Override layers applied in order (e.g. every model's, then one model's): ``{"train": {...}, "model": {...}}``."""
    out: dict = {"train": {}, "model": {}}
    for layer in layers:
        _merge(out, layer or {}, "overrides")
    return out


def assemble_run_config(model: str, seed: int, dataset: str, feature_set: str, profile: str, features: str,
                        splits: str, text: str, device: str = "auto", overrides: dict | None = None) -> RunConfig:
    """The resolved configuration of one run: defaults <- dataset profile <- overrides, plus the run's inputs. The
    workflow and the ``avzsl train``/``evaluate`` commands both build it here."""
    hp = resolve_hparams(model, profile, feature_set, overrides)
    return RunConfig(model=model, seed=int(seed), train=TrainConfig.from_dict(hp["train"]), model_params=hp["model"],
                     dataset=dataset, feature_set=feature_set, profile=profile, features=str(features),
                     splits=str(splits), text=str(text), device=device)
