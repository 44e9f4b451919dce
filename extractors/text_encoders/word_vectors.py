"""``word2vec`` (alias ``word_vectors``) and ``glove``: a class text is the mean of its in-vocabulary words' vectors.

Files: word2vec binary (e.g. GoogleNews-vectors-negative300.bin), word2vec text with a ``count dim`` header
(``.vec``/``.txt``) and GloVe text without a header. ``format: auto`` takes ``.bin`` as binary and anything else as
text with a header. ``reader: gensim`` loads the file with gensim's ``KeyedVectors.load_word2vec_format``;
``reader: stream`` scans it and keeps only the wanted words (same vectors, a fraction of the memory). With
``lowercase`` (the default) a word matches the first vocabulary entry, in file order, that equals it ignoring case.
Words not in the vocabulary are logged and reported; a text with no known word is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from extractors.params import choice, flag, integer
from extractors.text_encoders.model_files import model_file
from extractors.text_encoders.registry import FILE_PARAMS, TextEncoderError, alias, quiet_gensim, register

log = logging.getLogger("avzsl")

FORMATS = ("auto", "binary", "text", "glove")
READERS = ("gensim", "stream")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class NoKnownWord(TextEncoderError):
    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


def _params(fmt: str) -> dict:
    return {**FILE_PARAMS, "format": choice(fmt, FORMATS), "lowercase": flag(True), "reader": choice("gensim", READERS),
            "limit": integer(None, minimum=1)}


@register("word2vec", params=_params("auto"))
def _word2vec(texts: list[str], cfg: dict, report: dict) -> np.ndarray:
    return _mean_of_words(texts, cfg, report, "word2vec")


@register("glove", params=_params("glove"))
def _glove(texts: list[str], cfg: dict, report: dict) -> np.ndarray:
    return _mean_of_words(texts, cfg, report, "glove")


alias("word_vectors", "word2vec")


def _mean_of_words(texts: list[str], cfg: dict, report: dict, encoder: str) -> np.ndarray:
    fmt, reader = cfg["format"], cfg["reader"]
    if fmt not in FORMATS:
        raise TextEncoderError(f"text.{encoder}.format: {fmt!r} is not one of {list(FORMATS)}")
    if reader not in READERS:
        raise TextEncoderError(f"text.{encoder}.reader: {reader!r} is not one of {list(READERS)}")
    path = model_file(cfg, encoder)
    binary, no_header = _layout(path, fmt)
    lowercase = bool(cfg["lowercase"])
    limit = int(cfg["limit"]) if cfg.get("limit") else None
    tokens = [tokenize(t, lowercase) for t in texts]
    wanted = {w for toks in tokens for w in toks}
    if reader == "gensim":
        table = _read_gensim(path, wanted, lowercase, binary, no_header, limit)
    else:
        table = read_word_vectors(path, wanted, lowercase, binary=binary, no_header=no_header, limit=limit)
    out, oov = [], []
    for i, (text, toks) in enumerate(zip(texts, tokens)):
        known = [table[w] for w in toks if w in table]
        missing = [w for w in toks if w not in table]
        if not known:
            raise NoKnownWord(f"no word of class text {text!r} ({toks}) is in {path}", i)
        if missing:
            log.warning("text %r: words not in the vocabulary, left out of the mean: %s", text, " ".join(missing))
        oov.append(missing)
        out.append(np.mean(known, axis=0))
    report["oov"] = oov
    report["vocabulary_file"] = str(path)
    return np.stack(out) if out else np.zeros((0, 1), np.float32)


def tokenize(text: str, lowercase: bool) -> list[str]:
    words = _WORD.findall(text)
    return [w.lower() for w in words] if lowercase else words


def _layout(path: Path, fmt: str) -> tuple[bool, bool]:
    if fmt == "auto":
        return path.suffix == ".bin", False
    return fmt == "binary", fmt == "glove"


def _read_gensim(path: Path, wanted: set[str], lowercase: bool, binary: bool, no_header: bool,
                 limit: int | None) -> dict[str, np.ndarray]:
    from gensim.models import KeyedVectors

    quiet_gensim()
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header, limit=limit,
                                           unicode_errors="replace")
    found: dict[str, np.ndarray] = {}
    for i, word in enumerate(kv.index_to_key):
        key = word.lower() if lowercase else word
        if key in wanted and key not in found:
            found[key] = np.asarray(kv.vectors[i], dtype=np.float32)
            if len(found) == len(wanted):
                break
    return found


def read_word_vectors(path: str | Path, wanted: set[str], lowercase: bool = True, binary: bool | None = None,
                      no_header: bool = False, limit: int | None = None) -> dict[str, np.ndarray]:
    """Vectors of the ``wanted`` words from a word2vec binary/text or GloVe file, streamed (the file may be huge).
    ``binary`` defaults to the ``.bin`` suffix."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"word vector file not found: {path}")
    binary = path.suffix == ".bin" if binary is None else binary
    if binary and no_header:
        raise TextEncoderError(f"{path}: a binary word2vec file always has a header")
    found: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        n, dim = None, None
        if not no_header:
            header = f.readline().split()
            if len(header) != 2 or not all(h.isdigit() for h in header):
                raise TextEncoderError(f"{path}: expected a 'vocab_size dim' header line (a GloVe file has none: "
                                       "format glove)")
            n, dim = int(header[0]), int(header[1])
        count = 0
        while (n is None or count < n) and (limit is None or count < limit):
            if binary:
                word = _read_word(f)
                vec = np.frombuffer(f.read(4 * dim), dtype="<f4")
                if len(vec) != dim:
                    raise TextEncoderError(f"{path}: truncated vector for {word!r}")
            else:
                line = f.readline()
                if not line:
                    break
                parts = line.rstrip().split(b" ")
                word, vec = parts[0].decode("utf-8", "replace"), np.array(parts[1:], dtype=np.float32)
                if dim is not None and len(vec) != dim:
                    raise TextEncoderError(f"{path}: {len(vec)} values for {word!r}, expected {dim}")
                dim = len(vec)
            count += 1
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
