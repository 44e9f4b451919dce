"""The synthetic benchmark (bench/synthetic_features.py): official sizes, the project's stores, determinism, and the
properties its generative model promises (nuisance stronger than the class signal, audio weaker than video, zero-shot
transfer through text)."""

from __future__ import annotations

import collections

import h5py
import numpy as np
import pytest
import torch

from bench.synthetic_features import (
    SIZES,
    Knobs,
    benchmark_splits,
    generate,
    main,
    make_benchmark,
    stage_counts,
    stage_sizes,
)
from bench.train_throughput import UCF
from extractors.feature_store import FeatureStore
from extractors.splits import read_splits
from extractors.text_store import TextEmbeddings

OFFICIAL = {
    "UCF": {"stage_1_train": (30, 3174), "stage_1_val_seen": (30, 353), "stage_1_val_unseen": (12, 1467),
            "stage_2_test_seen": (42, 555), "stage_2_test_unseen": (9, 1267)},
    "ActivityNet": {"stage_1_train": (99, 9204), "stage_1_val_seen": (99, 1023), "stage_1_val_unseen": (51, 4307),
                    "stage_2_test_seen": (150, 1615), "stage_2_test_unseen": (50, 4199)},
    "VGGSound": {"stage_1_train": (138, 70351), "stage_1_val_seen": (138, 7817), "stage_1_val_unseen": (69, 3102),
                 "stage_2_test_seen": (207, 9032), "stage_2_test_unseen": (69, 3450)},
}
SMALL = {"dim": 64, "text_dim": 32}  # the generative model's difficulty does not depend on the width


@pytest.fixture(scope="module")
def ucf():
    return generate("UCF", seed=0, scale=0.3, **SMALL)


def video_means(bench, stage: str, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-video mean features of ``stage`` and their class ids."""
    rows = {v.video_id: v for v in bench.videos}
    pairs = bench.splits.videos[stage]
    x = np.stack([rows[vid].mean(modality) for vid, _ in pairs]).astype(np.float64)
    return x, np.array([bench.splits.class_id(c) for _, c in pairs])


def class_means(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.unique(y)
    return classes, np.stack([x[y == c].mean(0) for c in classes])


def nearest(x: np.ndarray, classes: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    return classes[((x[:, None, :] - prototypes[None]) ** 2).sum(-1).argmin(1)]


# ------------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("dataset", sorted(OFFICIAL))
def test_full_size_stages_match_the_official_splits(dataset):
    assert stage_sizes(dataset) == OFFICIAL[dataset]
    splits = benchmark_splits(dataset)  # validated as extractors/splits.py validates official splits
    assert len(splits.all_classes) == SIZES[dataset].n_all_classes
    for stage, per_class in stage_counts(dataset).items():
        assert list(per_class.values()) == list(SIZES[dataset].per_class[stage])
        assert collections.Counter(c for _, c in splits.videos[stage]) == per_class
    assert len(splits.videos["stage_2_train"]) == sum(OFFICIAL[dataset][s][1] for s in
                                                      ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"))


def test_ucf_sizes_are_the_throughput_benchmarks():
    assert stage_sizes("ucf") == UCF


def test_scale_shrinks_every_class_and_keeps_two():
    full, half, tiny = stage_counts("UCF"), stage_counts("UCF", 0.5), stage_counts("UCF", 0.001)
    for stage in full:
        assert half[stage].keys() == full[stage].keys()
        assert all(abs(half[stage][c] - n / 2) <= 0.5 for c, n in full[stage].items())
        assert set(tiny[stage].values()) == {2}
    benchmark_splits("VGGSound", 0.001)  # still a valid split


def test_hard_coded_counts_are_the_official_files(shared_splits):
    root = shared_splits / "avgzsl_benchmark_datasets"
    for dataset in OFFICIAL:
        official = read_splits(root / dataset / "class-split" / "main_split")
        assert len(official.all_classes) == SIZES[dataset].n_all_classes
        groups = {"train": sorted(official.classes["stage_1_train"]),
                  "val_unseen": sorted(official.classes["stage_1_val_unseen"])}
        order = {"stage_1_train": groups["train"], "stage_1_val_seen": groups["train"],
                 "stage_1_val_unseen": groups["val_unseen"],
                 "stage_2_test_seen": groups["train"] + groups["val_unseen"],
                 "stage_2_test_unseen": sorted(official.classes["stage_2_test_unseen"])}
        for stage, classes in order.items():
            assert sorted(official.classes[stage]) == sorted(classes)
            counts = collections.Counter(c for _, c in official.videos[stage])
            assert tuple(counts[c] for c in classes) == SIZES[dataset].per_class[stage], (dataset, stage)


# ------------------------------------------------------------------------------------------------ stores
def test_writes_the_project_stores_deterministically(tmp_path):
    kw = {"scale": 0.05, "dim": 16, "text_dim": 16, "subspace_dim": 16, "latent_dim": 4}
    a = make_benchmark(tmp_path / "a", "UCF", seed=3, **kw)
    b = make_benchmark(tmp_path / "b", "UCF", seed=3, **kw)
    c = make_benchmark(tmp_path / "c", "UCF", seed=4, **kw)
    assert set(a) == {"features", "splits", "text"}
    with h5py.File(a["features"]) as fa, h5py.File(b["features"]) as fb, h5py.File(c["features"]) as fc:
        for name in ("audio/seq", "video/seq", "audio/offsets", "video/mean"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes(), name
        assert fa["videos/label"][()].tolist() == fb["videos/label"][()].tolist()
        assert fa["video/seq"][()].tobytes() != fc["video/seq"][()].tobytes()
        lengths = np.diff(fa["video/offsets"][()])
    assert lengths.min() >= 4 and lengths.max() <= 10  # UCF: 4-10 seconds
    store = FeatureStore(a["features"])
    assert store.attrs["extractor"] == "synthetic-benchmark" and store.has_sequences
    assert store.dims == {"audio": 16, "video": 16}
    splits = read_splits(a["splits"])
    assert splits.digest() == benchmark_splits("UCF", 0.05).digest()
    assert sorted(store.ids) == sorted(v for s in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen",
                                                   "stage_2_test_seen", "stage_2_test_unseen")
                                       for v, _ in splits.videos[s])
    text = TextEmbeddings(a["text"])
    assert text.names == splits.all_classes and text.dim == 16
    np.testing.assert_allclose(np.linalg.norm(text.vectors, axis=1), 1, atol=1e-5)
    assert text.vectors.tobytes() == TextEmbeddings(b["text"]).vectors.tobytes()

    from training.data.features import load_stage

    data = load_stage(a["features"], a["splits"], a["text"], 1, torch.device("cpu"), sequences=True)
    assert len(data.train_idx) == len(splits.videos["stage_1_train"])


def test_activitynet_length_cap_and_knob_checks():
    b = generate("ActivityNet", scale=0.001, dim=8, text_dim=8, subspace_dim=8, latent_dim=4, max_seconds=12)
    lengths = {len(v.video_seq) for v in b.videos}
    assert min(lengths) >= 10 and max(lengths) <= 12
    assert b.config["max_seconds"] == 12 and b.config["dataset"] == "ActivityNet"
    with pytest.raises(ValueError):
        Knobs(latent_dim=20, subspace_dim=8).check(64, 32)
    with pytest.raises(TypeError):
        generate("UCF", scale=0.01, dim=8, text_dim=8, not_a_knob=1)


def test_command_line(tmp_path, capsys):
    main(["--dataset", "UCF", "--out", str(tmp_path / "b"), "--scale", "0.05", "--dim", "16", "--text-dim", "16",
          "--subspace-dim", "16", "--latent-dim", "4", "--nuisance", "3", "--rectify"])
    out = capsys.readouterr().out
    for stage, (n_classes, n_videos) in stage_sizes("UCF", 0.05).items():
        assert f"{stage}: {n_classes} classes, {n_videos} videos" in out
    config = FeatureStore(tmp_path / "b" / "features.h5").attrs["extractor_config"]
    assert '"nuisance": 3.0' in config and '"rectify": true' in config
    with h5py.File(tmp_path / "b" / "features.h5") as f:
        assert (f["video/seq"][()] >= 0).all()


# ------------------------------------------------------------------------------------------------ the model's properties
def test_class_signal_is_weaker_than_the_per_video_nuisance(ucf):
    for modality in ("audio", "video"):
        x, y = video_means(ucf, "stage_1_train", modality)
        classes, means = class_means(x, y)
        between = np.sqrt(((means - x.mean(0)) ** 2).mean())  # class signal in the per-video means
        within = np.sqrt(((x - means[np.searchsorted(classes, y)]) ** 2).mean())  # what varies between videos
        assert within > 2 * between, (modality, within, between)


def test_audio_is_less_informative_than_video(ucf):
    accuracy = {}
    for modality in ("audio", "video"):
        x, y = video_means(ucf, "stage_1_train", modality)
        classes, means = class_means(x, y)
        tests = [video_means(ucf, s, modality) for s in ("stage_1_val_seen", "stage_2_test_seen")]
        xt, yt = np.concatenate([t[0] for t in tests]), np.concatenate([t[1] for t in tests])
        keep = np.isin(yt, classes)
        accuracy[modality] = (nearest(xt[keep], classes, means) == yt[keep]).mean()
    chance = 1 / len(classes)
    assert accuracy["video"] > accuracy["audio"] + 0.15 and accuracy["audio"] > 2 * chance, accuracy
    assert accuracy["video"] < 0.9, accuracy  # hard: per-video means of the seen classes are far from separable


def test_zero_shot_transfer_through_text(ucf):
    seen = [video_means(ucf, s, "video") for s in ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen")]
    x, y = np.concatenate([s[0] for s in seen]), np.concatenate([s[1] for s in seen])
    centre = x.mean(0)
    classes, means = class_means(x - centre, y)
    text = ucf.text.astype(np.float64)
    t = text[classes]
    ridge = np.linalg.solve(t.T @ t + 0.1 * np.eye(t.shape[1]), t.T @ means)  # text -> class mean, seen classes
    xu, yu = video_means(ucf, "stage_2_test_unseen", "video")
    unseen = np.unique(yu)
    accuracy = (nearest(xu - centre, unseen, text[unseen] @ ridge) == yu).mean()
    assert accuracy > 2 / len(unseen), accuracy
    shuffled = np.random.default_rng(0).permutation(len(text))  # text unrelated to the classes: chance level
    control = (nearest(xu - centre, unseen, text[shuffled][unseen] @ ridge) == yu).mean()
    assert control < accuracy - 0.2, (control, accuracy)
