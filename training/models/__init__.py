"""Model registry. Every module in this package that defines a :class:`ZSLModel` subclass decorated with
:func:`register` becomes available by name; adding a model is adding a file."""

from __future__ import annotations

import importlib
import pkgutil

from training.models.base import InputDims, ZSLModel

MODELS: dict[str, type[ZSLModel]] = {}


def register(cls: type[ZSLModel]) -> type[ZSLModel]:
    if cls.name in MODELS:
        raise ValueError(f"model name {cls.name!r} registered twice")
    MODELS[cls.name] = cls
    return cls


def get_model_class(name: str) -> type[ZSLModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, dims: InputDims, params: dict | None = None) -> ZSLModel:
    cls = get_model_class(name)
    params = dict(params or {})
    unknown = sorted(set(params) - set(cls.hparams))
    if unknown:
        raise ValueError(f"model {name!r}: unknown hyper-parameter(s) {unknown}; known: {sorted(cls.hparams)}")
    return cls(dims, **{**cls.hparams, **params})


for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "layers"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["MODELS", "InputDims", "ZSLModel", "build_model", "get_model_class", "register"]
