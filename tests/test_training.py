"""Sampler, feature bank, AVCA and the two-stage engine on real (tiny) data."""

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import parameters_without_gradient, train_interrupted_then_resumed

import training.engine as engine
from extractors.feature_store import FeatureStore, StoreSpec, VideoFeatures, write_store
from training.config import RunConfig, TrainConfig, resolve_hparams
from training.data.batch import Batch
from training.data.features import FeatureBank
from training.data.sampler import ClassBalancedSampler
from training.models import InputDims, build_model


# ------------------------------------------------------------------------------------------------ sampler
def test_sampler_is_class_balanced_and_negatives_differ():
    labels = torch.tensor([0] * 90 + [5] * 10 + [7] * 20)
    s = ClassBalancedSampler(labels, batch_size=300, n_batches=20, generator=torch.Generator().manual_seed(0))
    pos = s.epoch()
    assert pos.shape == (20, 300)
    counts = torch.bincount(labels[pos.flatten()], minlength=8)[[0, 5, 7]].double() / pos.numel()
    assert torch.allclose(counts, torch.full((3,), 1 / 3, dtype=torch.double), atol=0.02)
    neg = s.negatives(pos)
    assert (labels[neg] != labels[pos]).all()
    # negative classes are uniform among the other classes
    for c in (0, 5, 7):
        others = labels[neg][labels[pos] == c]
        frac = torch.bincount(others, minlength=8)[[k for k in (0, 5, 7) if k != c]].double() / len(others)
        assert torch.allclose(frac, torch.full((2,), 0.5, dtype=torch.double), atol=0.05)


def test_sampler_is_seeded():
    labels = torch.arange(50) % 4
    draws = [ClassBalancedSampler(labels, 8, 3, torch.Generator().manual_seed(1)).epoch() for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


# ------------------------------------------------------------------------------------------------ bank
@pytest.fixture()
def seq_store(tmp_path):
    vids = [VideoFeatures(f"v{i}", "c", audio_seq=np.full((t, 2), i + 1, np.float32) * np.arange(1, t + 1)[:, None],
                          video_seq=np.full((t + 1, 3), -(i + 1), np.float32)) for i, t in enumerate([1, 4, 2])]
    spec = StoreSpec(audio_dim=2, video_dim=3, has_sequences=True, extractor="t", audio_step_seconds=0.96,
                     video_step_seconds=0.64)
    write_store(tmp_path / "s.h5", spec, vids)
    return FeatureStore(tmp_path / "s.h5")


def test_bank_pads_with_masks(seq_store):
    bank = FeatureBank(seq_store, np.arange(3), torch.device("cpu"), sequences=True)
    b = bank.gather(torch.tensor([0, 1, 2]))
    assert b.audio_seq.shape == (3, 4, 2) and b.video_seq.shape == (3, 5, 3)
    assert b.audio_pad.tolist() == [[False, True, True, True], [False] * 4, [False, False, True, True]]
    assert b.audio_seq[1, :, 0].tolist() == [2, 4, 6, 8]
    assert (b.audio_seq[b.audio_pad] == 0).all()
    assert bank.step_seconds == {"audio": 0.96, "video": 0.64}


def test_bank_crops_long_sequences(seq_store):
    bank = FeatureBank(seq_store, np.arange(3), torch.device("cpu"), sequences=True)
    centre = bank.gather(torch.tensor([1]), crop="center", max_steps=2)
    assert centre.audio_seq[0, :, 0].tolist() == [4, 6]  # steps 1..2 of 0..3
    crops = [bank.gather(torch.tensor([1]), crop="random", generator=torch.Generator().manual_seed(s), max_steps=2)
             for s in range(30)]
    assert {tuple(c.audio_seq[0, :, 0].tolist()) for c in crops} == {(2, 4), (4, 6), (6, 8)}
    # audio (4 steps) and video (5 steps) crops start at the same relative position
    for c in crops:
        a_start = int(c.audio_seq[0, 0, 0]) // 2 - 1
        assert a_start in (0, 1, 2) and c.video_seq.shape[1] == 2
    assert bank.gather(torch.tensor([1]), crop="center").audio_seq.shape[1] == 4  # no cap: the longest video


# ------------------------------------------------------------------------------------------------ AVCA
def _toy_batch(n=8, n_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % n_classes
    protos = torch.randn(n_classes, 10, generator=g)
    text = torch.nn.functional.normalize(torch.randn(n_classes, 6, generator=g), dim=1)
    audio = protos[label] + 0.05 * torch.randn(n, 10, generator=g)
    video = protos[label].flip(1) + 0.05 * torch.randn(n, 10, generator=g)
    perm = (label + 1) % n_classes
    neg_idx = torch.tensor([int(torch.nonzero(label == p)[0]) for p in perm])
    neg = Batch(audio=audio[neg_idx], video=video[neg_idx], label=label[neg_idx], text=text[label[neg_idx]])
    return Batch(audio=audio, video=video, label=label, text=text[label], neg=neg), text


def test_avca_gradients_reach_every_parameter():
    torch.manual_seed(0)
    batch, _ = _toy_batch()
    model = build_model("avca", InputDims(10, 10, 6))
    loss, parts = model.loss(batch)
    assert set(parts) == {"rec", "ct", "w", "t", "r"}
    loss.backward()
    missing = parameters_without_gradient(model)
    assert missing == []


def test_avca_overfits_eight_samples():
    torch.manual_seed(0)
    batch, text = _toy_batch()
    model = build_model("avca", InputDims(10, 10, 6), {"enc_dropout": 0.0, "proj_dropout": 0.0,
                                                       "dec_dropout": 0.0})
    opt = model.configure_optimizers(1e-3, 0.0)
    first = None
    for _ in range(300):
        logs = model.train_step(batch, opt)
        first = first if first is not None else float(logs["loss"])
    model.eval()
    with torch.no_grad():
        d = model.distances(model.embed_videos(batch.without_text()), model.embed_classes(text))["video"]
    assert float(logs["loss"]) < 0.3 * first
    assert torch.equal(d.argmin(1), batch.label)


# ------------------------------------------------------------------------------------------------ engine
def _cfg(tiny, **train):
    hp = resolve_hparams("avca", "demo")
    t = {**hp["train"], "epochs": 3, "n_batches": 4, "batch_size": 16, **train}
    return RunConfig(model="avca", seed=3, train=TrainConfig.from_dict(t), model_params=hp["model"], dataset="tiny",
                     feature_set="handcrafted", profile="demo", features=str(tiny["features"]),
                     splits=str(tiny["splits"]), text=str(tiny["text"]), device="cpu")


def test_stage1_is_deterministic_and_records_its_run(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset)
    a = engine.train_stage(cfg, 1, tmp_path / "a", progress=False)
    b = engine.train_stage(cfg, 1, tmp_path / "b", progress=False)
    assert a == b
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    header = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())
    assert header["seed"] == 3 and header["stage"] == 1 and "git_sha" in header and header["code_version"]
    assert header["run"]["model_params"]["margin"] == 1.0 and header["run"]["train"]["epochs"] == 3
    lines = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert {"S", "U", "HM", "ZSL", "beta"} <= set(lines[0]["val"]["video"])
    best = max(lines, key=lambda r: (r["val"]["video"]["HM"], -r["epoch"]))
    assert a["best_epoch"] == best["epoch"] and a["beta"] == pytest.approx(best["beta"])


def test_interrupted_training_resumes_to_the_same_result(tiny_dataset, tmp_path, monkeypatch):
    cfg = _cfg(tiny_dataset)
    reference = engine.train_stage(cfg, 1, tmp_path / "ref", progress=False)
    resumed = train_interrupted_then_resumed(monkeypatch, cfg, tmp_path / "run")
    assert resumed == reference
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 3


def test_stage2_trains_to_the_selected_epoch_and_tests_with_the_selected_beta(tiny_dataset, tmp_path, monkeypatch):
    cfg = _cfg(tiny_dataset)
    selection = {"best_epoch": 1, "beta": 0.4, "val": {}}
    seen_betas = []
    real = engine.evaluate_split

    def spy(model, data, split, cfg, beta=None, **kw):
        seen_betas.append((split is data.test, beta))
        return real(model, data, split, cfg, beta, **kw)

    monkeypatch.setattr(engine, "evaluate_split", spy)
    engine.train_stage(cfg, 2, tmp_path / "s2", selection, progress=False)
    lines = (tmp_path / "s2" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2  # epochs 0 and 1: the same 0-based epoch index as the stage-1 selection
    result = engine.evaluate_test(cfg, tmp_path / "s2" / "model.pt", selection,
                                  predictions_out=tmp_path / "predictions.npz")
    assert seen_betas[-1] == (True, 0.4)  # the test split, with the stage-1 beta, no search
    assert result["beta"] == 0.4 and result["best_epoch"] == 1
    # the saved per-video predictions are the ones behind the numbers
    from training.metrics import mean_class_accuracy
    from training.run_dir import read_predictions

    p = read_predictions(tmp_path / "predictions.npz")
    labels = torch.as_tensor(p["labels"], dtype=torch.long)
    assert p["beta"] == pytest.approx(0.4)
    for key, classes in (("S", p["seen"]), ("U", p["unseen"])):
        assert 100 * mean_class_accuracy(torch.as_tensor(p["pred_gzsl"], dtype=torch.long), labels,
                                         classes.tolist()) == pytest.approx(result[key])
    rows = p["pred_zsl"] >= 0
    assert 100 * mean_class_accuracy(torch.as_tensor(p["pred_zsl"][rows], dtype=torch.long), labels[rows],
                                     p["unseen"].tolist()) == pytest.approx(result["ZSL"])
    assert p["video_embedding"].shape[0] == len(labels)
    assert p["class_embedding"].shape == (len(p["class_embedding_ids"]), p["video_embedding"].shape[1])
    assert {"S", "U", "HM", "ZSL"} <= set(result) and 0 <= result["HM"] <= 100
    # the reported numbers are those of the recorded primary mode
    assert {k: result["modes"][result["primary_mode"]][k] for k in ("S", "U", "HM", "ZSL")} == {
        k: result[k] for k in ("S", "U", "HM", "ZSL")}
    # stage 2 trains on train + val: more training videos than stage 1
    d1, d2 = engine.load_data(cfg, 1, torch.device("cpu")), engine.load_data(cfg, 2, torch.device("cpu"))
    assert len(d2.train_idx) > len(d1.train_idx)
    assert d2.test is not None and set(d2.test.unseen).isdisjoint(d2.train_labels.tolist())
