import numpy as np
import pytest

from extractors.text_encoders import encode, read_word_vectors
from extractors.text_store import TextEmbeddings, TextStoreError, write_text_store


def _word2vec(path, words, binary):
    vecs = {w: np.arange(3, dtype=np.float32) + i for i, w in enumerate(words)}
    with open(path, "wb") as f:
        f.write(f"{len(words)} 3\n".encode())
        for w, v in vecs.items():
            if binary:
                f.write(w.encode() + b" " + v.astype("<f4").tobytes() + b"\n")
            else:
                f.write((w + " " + " ".join(str(x) for x in v) + "\n").encode())
    return vecs


@pytest.mark.parametrize("binary", [True, False])
def test_word_vector_files_are_read_and_averaged(tmp_path, binary):
    path = tmp_path / ("v.bin" if binary else "v.vec")
    vecs = _word2vec(path, ["low", "hum", "red", "Ball"], binary)
    table = read_word_vectors(path, {"low", "ball"})
    np.testing.assert_array_equal(table["low"], vecs["low"])
    np.testing.assert_array_equal(table["ball"], vecs["Ball"])
    out = encode(["a Low hum"], "word_vectors", {"path": str(path)})
    mean = (vecs["low"] + vecs["hum"]) / 2
    np.testing.assert_allclose(out[0], mean / np.linalg.norm(mean), rtol=1e-6)
    with pytest.raises(ValueError, match="no word"):
        encode(["zebra"], "word_vectors", {"path": str(path)})


def test_minilm_offline_embeddings_are_normalised_and_distinguish_names():
    v = encode(["a red ball bouncing with a low hum", "a red ball bouncing with a high whistle",
                "green stripes scrolling with deep drum beats"], "minilm")
    assert v.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > sims[0, 2]  # sharing what is seen makes two descriptions closer


def test_store_lookup_is_by_name(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    write_text_store(tmp_path / "t.h5", ["b", "a", "c"], ["B", "A", "C"], vectors, "test")
    emb = TextEmbeddings(tmp_path / "t.h5")
    np.testing.assert_array_equal(emb.matrix(["a", "b"]), vectors[[1, 0]])
    with pytest.raises(TextStoreError, match="no embedding"):
        emb.matrix(["a", "zzz"])
    with pytest.raises(TextStoreError, match="duplicate"):
        write_text_store(tmp_path / "d.h5", ["a", "a"], ["A", "A"], vectors[:2], "test")
