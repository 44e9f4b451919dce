"""The class-text-embedding store: the one module that reads and writes avzsl's text embedding files.

Layout (``format = "avzsl-text"``, ``format_version = 1``)::

    /           attrs: format, format_version, encoder, encoder_config (JSON), dim, normalized, code_version
    /names      (C,)    utf-8    class name exactly as in the split files (the key)
    /texts      (C,)    utf-8    the text that was encoded for that class
    /vectors    (C, D)  float32

Embeddings are always looked up by class name; a row's position carries no meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from avzsl.common import atomic_path, code_version, quarantine

FORMAT = "avzsl-text"
FORMAT_VERSION = 1
_STR = h5py.string_dtype("utf-8")


class TextStoreError(ValueError):
    pass


def write_text_store(path: str | Path, names: Sequence[str], texts: Sequence[str], vectors: np.ndarray,
                     encoder: str, encoder_config: dict | None = None, normalized: bool = True) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(names) or len(texts) != len(names):
        raise TextStoreError(f"text store {path}: {len(names)} names, {len(texts)} texts, vectors {vectors.shape}")
    if len(set(names)) != len(names):
        raise TextStoreError(f"text store {path}: duplicate class names")
    if not np.isfinite(vectors).all():
        raise TextStoreError(f"text store {path}: non-finite embedding values")
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "encoder": encoder,
                        "encoder_config": json.dumps(encoder_config or {}, sort_keys=True),
                        "dim": vectors.shape[1], "normalized": bool(normalized), "code_version": code_version()})
        f.create_dataset("names", data=np.array(list(names), dtype=object), dtype=_STR)
        f.create_dataset("texts", data=np.array(list(texts), dtype=object), dtype=_STR)
        f.create_dataset("vectors", data=vectors)


class TextEmbeddings:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise TextStoreError(f"text embeddings not found: {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise TextStoreError(f"{self.path} is not an avzsl text embedding file")
                self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
                self.names = [_s(x) for x in f["names"][()]]
                self.texts = [_s(x) for x in f["texts"][()]]
                self.vectors = f["vectors"][()]
        except (OSError, KeyError) as e:
            raise quarantine(self.path, f"not a readable text store: {str(e).splitlines()[0]}") from None
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.names):
            raise quarantine(self.path, f"{len(self.names)} names for vectors of shape {self.vectors.shape}")
        self._row = {n: i for i, n in enumerate(self.names)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def vector(self, name: str) -> np.ndarray:
        return self.matrix([name])[0]

    def matrix(self, class_names: Sequence[str]) -> np.ndarray:
        """Rows in the order of ``class_names``; every name must be present."""
        missing = [n for n in class_names if n not in self._row]
        if missing:
            raise TextStoreError(f"{self.path}: no embedding for {len(missing)} class(es), e.g. {missing[:5]}")
        return self.vectors[[self._row[n] for n in class_names]]


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
