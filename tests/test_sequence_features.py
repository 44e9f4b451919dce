"""The second synthetic benchmark (bench/sequence_features.py): the project's stores, determinism, and the properties
its generative model promises (evidence confined to a few seconds at varying positions, classes defined by order,
silent audio in a share of the clips, zero-shot transfer through text)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from bench.sequence_features import Knobs, class_pairs, generate, main, make_benchmark, motif_track
from bench.synthetic_features import benchmark_splits, stage_sizes
from extractors.feature_store import FeatureStore
from extractors.splits import read_splits
from extractors.text_store import TextEmbeddings

SMALL = {"dim": 64, "text_dim": 32}


@pytest.fixture(scope="module")
def ucf():
    return generate("UCF", seed=0, scale=0.3, **SMALL)


def descriptors(bench, stage: str, kind: str, modality: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """Per video: the mean of its seconds ("mean", a bag of seconds), or the antisymmetric sum over ordered pairs of
    its centred seconds Σ_{t<s} (x_t x_sᵀ − x_s x_tᵀ) ("order", which reads what follows what)."""
    rows = {v.video_id: v for v in bench.videos}
    x, y = [], []
    for vid, c in bench.splits.videos[stage]:
        s = rows[vid].seq(modality).astype(np.float64)
        if kind == "mean":
            x.append(s.mean(0))
        else:
            s = s - s.mean(0)
            before = np.cumsum(s, 0) - s  # sum of the earlier seconds
            a = before.T @ s
            x.append((a - a.T).ravel())
        y.append(bench.splits.class_id(c))
    return np.array(x), np.array(y)


def nearest_class_mean(train, test) -> np.ndarray:
    (x, y), (xt, _) = train, test
    classes = np.unique(y)
    prototypes = np.stack([x[y == c].mean(0) for c in classes])
    return classes[((xt[:, None] - prototypes[None]) ** 2).sum(-1).argmin(1)]


def reversed_pair_accuracy(bench, kind: str) -> tuple[float, int]:
    """Mean accuracy of telling each training class from its reverse (both seen), nearest class mean."""
    train, test = descriptors(bench, "stage_1_train", kind), descriptors(bench, "stage_1_val_seen", kind)
    seen = {int(c) for c in np.unique(train[1])}
    by_pair = {tuple(bench.pairs[c]): c for c in seen}
    scores = []
    for c in seen:
        r = by_pair.get(tuple(bench.pairs[c][::-1]))
        if r is None or r < c:
            continue
        keep, keep_t = np.isin(train[1], [c, r]), np.isin(test[1], [c, r])
        pred = nearest_class_mean((train[0][keep], train[1][keep]), (test[0][keep_t], test[1][keep_t]))
        scores.append((pred == test[1][keep_t]).mean())
    return float(np.mean(scores)), len(scores)


# ------------------------------------------------------------------------------------------------ stores
def test_writes_the_project_stores_deterministically(tmp_path):
    kw = {"scale": 0.05, "dim": 16, "text_dim": 16, "subspace_dim": 16, "latent_dim": 4}
    a = make_benchmark(tmp_path / "a", "UCF", seed=3, **kw)
    b = make_benchmark(tmp_path / "b", "UCF", seed=3, **kw)
    c = make_benchmark(tmp_path / "c", "UCF", seed=4, **kw)
    with h5py.File(a["features"]) as fa, h5py.File(b["features"]) as fb, h5py.File(c["features"]) as fc:
        for name in ("audio/seq", "video/seq", "audio/offsets", "video/mean"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes(), name
        assert fa["video/seq"][()].tobytes() != fc["video/seq"][()].tobytes()
        lengths = np.diff(fa["video/offsets"][()])
    assert lengths.min() >= 4 and lengths.max() <= 10
    store = FeatureStore(a["features"])
    assert store.attrs["extractor"] == "sequence-benchmark" and store.has_sequences
    assert json.loads(store.attrs["extractor_config"])["generator"] == "sequence"
    splits = read_splits(a["splits"])
    assert splits.digest() == benchmark_splits("UCF", 0.05).digest()
    text = TextEmbeddings(a["text"])
    assert text.names == splits.all_classes and text.dim == 16
    np.testing.assert_allclose(np.linalg.norm(text.vectors, axis=1), 1, atol=1e-5)
    assert text.vectors.tobytes() == TextEmbeddings(b["text"]).vectors.tobytes()

    from training.data.features import load_stage

    data = load_stage(a["features"], a["splits"], a["text"], 1, torch.device("cpu"), sequences=True)
    assert len(data.train_idx) == len(splits.videos["stage_1_train"])  # silent audio is present audio


def test_command_line_and_knob_checks(tmp_path, capsys):
    main(["--dataset", "UCF", "--out", str(tmp_path / "b"), "--scale", "0.05", "--dim", "16", "--text-dim", "16",
          "--subspace-dim", "16", "--latent-dim", "4", "--audio-absent", "0.5"])
    out = capsys.readouterr().out
    for stage, (n_classes, n_videos) in stage_sizes("UCF", 0.05).items():
        assert f"{stage}: {n_classes} classes, {n_videos} videos" in out
    assert '"audio_absent": 0.5' in FeatureStore(tmp_path / "b" / "features.h5").attrs["extractor_config"]
    with pytest.raises(ValueError, match="ordered pairs"):
        Knobs(motifs=5).check(64, 32, n_classes=101, n_train=30)
    with pytest.raises(ValueError, match="training classes"):
        Knobs(motifs=40).check(64, 32, n_classes=101, n_train=30)


# ------------------------------------------------------------------------------------------------ classes
def test_classes_are_distinct_ordered_pairs_and_training_sees_every_motif_in_both_roles():
    pairs = class_pairs(11, 101, 30, seed=0)
    assert len({tuple(p) for p in pairs}) == 101 and (pairs[:, 0] != pairs[:, 1]).all()
    train = pairs[:30]
    assert set(train[:, 0]) == set(range(11)) == set(train[:, 1])
    reversed_in_train = sum(tuple(p[::-1]) in {tuple(q) for q in train} for p in train)
    assert reversed_in_train >= 10


def test_evidence_is_a_few_seconds_at_varying_positions(ucf):
    rows = {v.video_id: v for v in ucf.videos}
    starts = {e.start for e in ucf.events.values()}
    assert len(starts) >= 4  # UCF clips of 4-10 s, two 2-s motifs: starts 0..6
    vid, label = ucf.splits.videos["stage_1_train"][0]
    event, cls = ucf.events[vid], ucf.splits.class_id(label)
    track = motif_track(event, ucf.pairs[cls], len(rows[vid].video_seq))
    assert (track >= 0).sum() == 2 * event.length == 4
    assert list(track[event.start:event.start + 4]) == [ucf.pairs[cls][0]] * 2 + [ucf.pairs[cls][1]] * 2


def test_order_matters_a_bag_of_seconds_cannot_tell_a_class_from_its_reverse(ucf):
    mean_acc, n = reversed_pair_accuracy(ucf, "mean")
    order_acc, _ = reversed_pair_accuracy(ucf, "order")
    assert n >= 10
    assert mean_acc < 0.62  # chance is 0.5
    assert order_acc > 0.85


def test_a_share_of_the_clips_has_silent_audio(ucf):
    silent = [v for v in ucf.videos if ucf.events[v.video_id].audio_silent]
    assert 0.2 < len(silent) / len(ucf.videos) < 0.3  # audio_absent 0.25
    x = np.concatenate([v.audio_seq for v in silent[:50]])
    assert x.std(0).mean() < 0.3  # the same silence in every clip, small noise (e = 2 elsewhere)
    loud = np.concatenate([v.audio_seq for v in ucf.videos if not ucf.events[v.video_id].audio_silent][:500])
    assert loud.std(0).mean() > 1.5


def test_zero_shot_transfer_through_text(ucf):
    """A ridge map text -> class-mean feature fitted on the training classes predicts unseen classes' means."""
    x, y = descriptors(ucf, "stage_1_train", "mean")
    xt, yt = descriptors(ucf, "stage_1_val_unseen", "mean")
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(0) for c in classes])
    t = ucf.text[classes].astype(np.float64)
    w = np.linalg.solve(t.T @ t + 1e-2 * np.eye(t.shape[1]), t.T @ means)
    unseen = np.unique(yt)
    pred = unseen[((xt[:, None] - (ucf.text[unseen] @ w)[None]) ** 2).sum(-1).argmin(1)]
    assert (pred == yt).mean() > 3 / len(unseen)  # chance 1/12


@pytest.mark.parametrize("dataset,motifs", [("ActivityNet", 15), ("VGGSound", 19)])
def test_the_larger_datasets_get_enough_motifs_for_distinct_classes(dataset, motifs):
    b = generate(dataset, scale=0.002, dim=16, text_dim=16, subspace_dim=16, latent_dim=4, max_seconds=20)
    assert b.config["motifs"] == motifs and len({tuple(p) for p in b.pairs}) == len(b.splits.all_classes)
    assert max(len(v.video_seq) for v in b.videos) <= 20
