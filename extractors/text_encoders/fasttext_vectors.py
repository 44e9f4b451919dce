"""``fasttext``: the whole class text as one token of a fastText model (``.bin`` with its subword n-grams).

The text, spaces included, is looked up like a single word: its vector is the vocabulary vector when the string
is a vocabulary entry, and is otherwise composed from the vectors of its character n-grams (of ``<text>``). This
is what the reference's word embeddings are (fastText ``get_word_vector`` on the class name, then L2
normalisation). ``reader: gensim`` reads the ``.bin`` with gensim's ``load_facebook_vectors`` (pure Python);
``reader: fasttext`` uses the compiled fastText library (package ``fasttext-wheel``) when it is installed.
"""

from __future__ import annotations

import numpy as np

from extractors.params import choice, flag
from extractors.text_encoders.model_files import model_file
from extractors.text_encoders.registry import FILE_PARAMS, TextEncoderError, quiet_gensim, register

READERS = ("gensim", "fasttext")


@register("fasttext", params={**FILE_PARAMS, "reader": choice("gensim", READERS), "lowercase": flag(False)})
def _fasttext(texts: list[str], cfg: dict, report: dict) -> np.ndarray:
    reader = cfg["reader"]
    if reader not in READERS:
        raise TextEncoderError(f"text.fasttext.reader: {reader!r} is not one of {list(READERS)}")
    path = model_file(cfg, "fasttext")
    keys = [t.lower() for t in texts] if cfg["lowercase"] else list(texts)
    if reader == "fasttext":
        try:
            import fasttext
        except ImportError:
            raise TextEncoderError("text.fasttext.reader: 'fasttext' needs the fastText library (pip install "
                                   "fasttext-wheel); 'gensim' reads the same file") from None
        model = fasttext.load_model(str(path))
        vectors = [model.get_word_vector(k) for k in keys]
        in_vocab = [model.get_word_id(k) >= 0 for k in keys]
    else:
        from gensim.models.fasttext import load_facebook_vectors

        quiet_gensim()
        kv = load_facebook_vectors(str(path))
        vectors = [_gensim_vector(kv, k) for k in keys]
        in_vocab = [k in kv.key_to_index for k in keys]
    report["in_vocabulary"] = in_vocab
    report["vocabulary_file"] = str(path)
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors]) if vectors else np.zeros((0, 1))


def _gensim_vector(kv, key: str) -> np.ndarray:
    try:
        return kv[key]
    except KeyError:
        raise TextEncoderError(f"fastText model has no vector for {key!r} (not in the vocabulary and no "
                               "character n-grams)") from None
