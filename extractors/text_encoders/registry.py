"""The text encoders' registry: each encoder registers its function with its declared parameters
(:mod:`extractors.params`: type, allowed values, default), which the workflow checks while it plans."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from extractors.params import Param, ParamError, check_values, defaults, local_file, string

# a model file: local, or a url fetched once; either with an optional digest
FILE_PARAMS = {"path": local_file(), "url": string(), "sha256": string()}
FILE_KEYS = tuple(FILE_PARAMS)


class TextEncoderError(ValueError):
    pass


@dataclass
class Encoder:
    name: str
    fn: Callable[[list[str], dict, dict], np.ndarray]
    params: dict[str, Param] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    block: str = ""  # the config section (text.<block>) holding its parameters

    @property
    def defaults(self) -> dict:
        return defaults(self.params)


ENCODERS: dict[str, Encoder] = {}


def register(name: str, params: dict[str, Param] | None = None, required: Sequence[str] = (),
             block: str | None = None):
    """Register ``fn(texts, params, report) -> (N, D) array``; ``params`` declares every accepted key."""
    def deco(fn):
        ENCODERS[name] = Encoder(name, fn, dict(params or {}), tuple(required), block or name)
        return fn
    return deco


def alias(name: str, target: str) -> None:
    ENCODERS[name] = ENCODERS[target]


def encoder_spec(name: str) -> Encoder:
    if name not in ENCODERS:
        raise TextEncoderError(f"unknown text encoder {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[name]


def check_params(name: str, params: dict | None) -> dict:
    """The encoder's parameters with defaults filled in; an unknown or missing key, or a value its declaration does
    not allow, is an error naming it."""
    spec = encoder_spec(name)
    params = {k: v for k, v in (params or {}).items() if v is not None}
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise TextEncoderError(f"text encoder {name!r}: unknown parameter {unknown[0]!r} (text.{spec.block}."
                               f"{unknown[0]} or text.params.{unknown[0]}); accepted: {sorted(spec.params)}")
    try:
        check_values(spec.params, params, f"text.{spec.block}", f"text encoder {name!r}")
    except ParamError as e:
        raise TextEncoderError(str(e)) from None
    out = {**{k: v for k, v in spec.defaults.items() if v is not None}, **params}
    for key in spec.required:
        if key not in out:
            raise TextEncoderError(f"text encoder {name!r} needs parameter {key!r} (text.{spec.block}.{key})")
    if "path" in spec.params and spec.defaults.get("path") is None:
        if "path" in out and "url" in out:
            raise TextEncoderError(f"text encoder {name!r}: give 'path' or 'url' (text.{spec.block}), not both")
        if "path" not in out and "url" not in out:
            raise TextEncoderError(f"text encoder {name!r} needs its model file: 'path' (local) or 'url' "
                                   f"(text.{spec.block}.path / .url)")
    return out


def quiet_gensim() -> None:
    """gensim logs every load step at INFO; the job log keeps only its warnings."""
    logging.getLogger("gensim").setLevel(logging.WARNING)
