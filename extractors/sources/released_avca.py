"""Import a released benchmark feature tree into avzsl's stores, so that the same train/evaluate DAG runs on it.

Two layouts (reference-protocol §1.2-1.3)::

    <root>/<DS>/class-split/{all_class.txt, <ds>_w2v_class_names.csv, main_split/, cls_split/}
    avca:  <root>/<DS>/features/<main_features|cls_features>/{audio,video}/<stage>/<Class>.h5   (data, video_urls)
    tcaf:  <root>/<DS>/features/<main|cls>_features_non_averaged/{audio,video}/<stage>/<Class>.pkl
           (dict: features = one (T_i, D) array per video, video_names, fps)
    both:  <root>/<DS>/features/<method>/text/word_embeddings_<ds>_normed.npy

AVCA's h5 files hold per-video means; TCaF's pickles hold the per-step sequences (SeLaVi: one step per ~1 s; C3D
0.64 s and VGGish 0.96 s), read with a restricted unpickler that builds only lists, dicts, strings and arrays. The
reference reads the folders stage_1_train, stage_1_val_seen,
stage_1_val_unseen, stage_2_test_seen and stage_2_test_unseen (never stage_2_train). Text embeddings are matched to
classes *by name* through the ``original,manual`` table. ``legacy_reference_order`` instead gives class i the
embedding of the i-th alphabetically sorted manual name, which is what the reference code does (§2.4) and what the
published numbers were computed with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from avzsl.common import config_hash
from extractors.feature_store import StoreSpec, VideoFeatures, write_store
from extractors.safe_pickle import load_npy, load_pickle
from extractors.sources.manifest import read_class_names
from extractors.splits import SplitError, Splits, read_splits, write_splits
from extractors.text_store import write_text_store

DATASETS = {  # tree name -> (text file key, class-name csv)
    "UCF": ("ucf", "ucf_w2v_class_names.csv"),
    "ActivityNet": ("activity", "activitynet_w2v_class_names.csv"),
    "VGGSound": ("vggsound", "vggsound_w2v_class_names.csv"),
}
LAYOUTS = {
    "avca": {"main": "main_features", "cls": "cls_features"},
    "tcaf": {"main": "main_features_non_averaged", "cls": "cls_features_non_averaged"},
}
SPLIT_DIRS = {"main": "main_split", "cls": "cls_split"}
STEP_SECONDS = {"main": (1.0, 1.0), "cls": (0.96, 0.64)}  # (audio, video): SeLaVi windows; VGGish, C3D
READ_STAGES = ("stage_1_train", "stage_1_val_seen", "stage_1_val_unseen", "stage_2_test_seen", "stage_2_test_unseen")

log = logging.getLogger("avzsl.released")


class ReleasedTreeError(FileNotFoundError):
    pass


def dataset_dir(root: str | Path, dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"released_avca.dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    d = Path(root) / dataset
    if not Path(root).is_dir():
        raise ReleasedTreeError(f"released AVCA feature root not found: {root}")
    if not d.is_dir():
        raise ReleasedTreeError(f"released AVCA feature root {root} has no {dataset}/ folder")
    return d


def _check_feature_set(feature_set: str) -> None:
    if feature_set not in SPLIT_DIRS:
        raise ValueError(f"released feature sets are {sorted(SPLIT_DIRS)}, got {feature_set!r}")


def read_tree_splits(root: str | Path, dataset: str, feature_set: str) -> Splits:
    _check_feature_set(feature_set)
    cs = dataset_dir(root, dataset) / "class-split"
    return read_splits(cs / SPLIT_DIRS[feature_set], cs / "all_class.txt")


def import_splits(root: str | Path, dataset: str, feature_set: str, out_dir: str | Path) -> Splits:
    splits = read_tree_splits(root, dataset, feature_set)
    write_splits(out_dir, splits)
    return splits


def features_dir(root: str | Path, dataset: str, feature_set: str, layout: str = "avca") -> Path:
    _check_feature_set(feature_set)
    if layout not in LAYOUTS:
        raise ValueError(f"released tree layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    return dataset_dir(root, dataset) / "features" / LAYOUTS[layout][feature_set]


def import_features(root: str | Path, dataset: str, feature_set: str, out: str | Path, layout: str = "avca") -> dict:
    """All per-class files of the five stage folders -> one feature store (means; plus sequences for tcaf)."""
    splits = read_tree_splits(root, dataset, feature_set)
    fdir = features_dir(root, dataset, feature_set, layout)
    folded = {c.casefold(): c for c in splits.all_classes}
    suffix, reader = (".h5", _read_class_h5) if layout == "avca" else (".pkl", _read_class_pickle)
    per_mod: dict[str, dict[str, tuple[str, np.ndarray]]] = {"audio": {}, "video": {}}
    for modality in per_mod:
        for stage in READ_STAGES:
            stage_dir = fdir / modality / stage
            if not stage_dir.is_dir():
                raise ReleasedTreeError(f"missing feature folder {stage_dir}")
            wanted = set(splits.classes[stage])
            for path in sorted(stage_dir.glob(f"*{suffix}")):
                cls = folded.get(path.stem.casefold())
                if cls is None:
                    raise ReleasedTreeError(f"{path}: class {path.stem!r} is not in all_class.txt")
                if cls not in wanted:  # e.g. cls_split test-unseen folders hold classes the txt leaves out
                    continue
                names, data = reader(path)
                for name, row in zip(names, data):
                    prev = per_mod[modality].get(name)
                    if prev is not None and not np.array_equal(prev[1], row):
                        raise ReleasedTreeError(f"video {name!r} appears twice with different {modality} features")
                    per_mod[modality][name] = (cls, row)
    audio, video = per_mod["audio"], per_mod["video"]
    only_one = sorted(set(audio) ^ set(video))
    if only_one:
        log.warning("%d videos have only one modality and are left out, e.g. %s", len(only_one), only_one[:3])
    names = sorted(set(audio) & set(video))
    if not names:
        raise ReleasedTreeError(f"no features found under {fdir}")
    mismatched = [n for n in names if audio[n][0] != video[n][0]]
    if mismatched:
        raise ReleasedTreeError(f"audio and video disagree on the class of {mismatched[:3]}")
    first = names[0]
    cfg = {"source": f"released_{layout}", "dataset": dataset, "feature_set": feature_set}
    sequences = layout == "tcaf"
    step_a, step_v = STEP_SECONDS[feature_set]
    spec = StoreSpec(audio_dim=audio[first][1].shape[-1], video_dim=video[first][1].shape[-1],
                     has_sequences=sequences, extractor=f"released_{layout}/{LAYOUTS[layout][feature_set]}",
                     extractor_config=cfg, config_hash=config_hash(cfg), audio_step_seconds=step_a,
                     video_step_seconds=step_v)
    if sequences:
        videos = (VideoFeatures(v, audio[v][0], audio_seq=audio[v][1], video_seq=video[v][1]) for v in names)
    else:
        videos = (VideoFeatures(v, audio[v][0], audio_mean=audio[v][1], video_mean=video[v][1]) for v in names)
    n = write_store(out, spec, videos)
    return {"videos": n, "audio_dim": spec.audio_dim, "video_dim": spec.video_dim, "sequences": sequences}


def _read_class_h5(path: Path) -> tuple[list[str], np.ndarray]:
    with h5py.File(path, "r") as f:
        if "data" not in f or "video_urls" not in f:
            raise ReleasedTreeError(f"{path}: expected datasets 'data' and 'video_urls'")
        data = np.asarray(f["data"][()], dtype=np.float32)
        names = [u.decode() if isinstance(u, bytes) else str(u) for u in f["video_urls"][()]]
    if data.ndim != 2 or len(data) != len(names):
        raise ReleasedTreeError(f"{path}: data {data.shape} does not match {len(names)} video_urls")
    return [Path(n).stem if "/" in n else n for n in names], data


def _read_class_pickle(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """One TCaF per-class pickle: {features: [(T_i, D)], video_names: [bytes], fps: [...]}, loaded without running it."""
    data = load_pickle(path)
    if not isinstance(data, dict) or not {"features", "video_names"} <= set(data):
        raise ReleasedTreeError(f"{path}: expected a dict with 'features' and 'video_names'")
    feats, names = data["features"], data["video_names"]
    if len(feats) != len(names):
        raise ReleasedTreeError(f"{path}: {len(feats)} feature arrays for {len(names)} video names")
    arrays = []
    for f in feats:
        a = np.asarray(f, dtype=np.float32)
        if a.ndim != 2 or len(a) == 0:
            raise ReleasedTreeError(f"{path}: expected (T, D) arrays with T >= 1, got shape {a.shape}")
        arrays.append(a)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names], arrays


def read_manual_names(root: str | Path, dataset: str) -> dict[str, str]:
    path = dataset_dir(root, dataset) / "class-split" / DATASETS[dataset][1]
    if not path.exists():
        raise ReleasedTreeError(f"class-name table not found: {path}")
    return read_class_names(path)


def text_file(root: str | Path, dataset: str, feature_set: str, layout: str = "avca") -> Path:
    return features_dir(root, dataset, feature_set, layout) / "text" / f"word_embeddings_{DATASETS[dataset][0]}_normed.npy"


def class_text_assignment(all_classes: list[str], manual: dict[str, str], keys: list[str],
                          legacy_reference_order: bool) -> dict[str, str]:
    """Which embedding key each class gets: its own manual name, or (legacy) the i-th sorted key for class id i."""
    folded = {k.casefold(): v for k, v in manual.items()}
    own = {}
    for c in all_classes:
        m = manual.get(c, folded.get(c.casefold()))
        if m is None:
            raise SplitError(f"class {c!r} has no entry in the original,manual table")
        own[c] = m
    if not legacy_reference_order:
        missing = sorted(set(own.values()) - set(keys))
        if missing:
            raise SplitError(f"no text embedding for manual name(s) {missing[:5]}")
        return own
    ordered = sorted(keys)
    if len(ordered) < len(all_classes):
        raise SplitError("fewer text embeddings than classes; cannot reproduce the reference order")
    return {c: ordered[i] for i, c in enumerate(sorted(all_classes))}


def import_text(root: str | Path, dataset: str, feature_set: str, out: str | Path,
                legacy_reference_order: bool = False, npy: str | Path | None = None, layout: str = "avca") -> dict:
    splits = read_tree_splits(root, dataset, feature_set)
    path = Path(npy) if npy else text_file(root, dataset, feature_set, layout)
    if not path.exists():
        raise ReleasedTreeError(f"text embedding file not found: {path}")
    table = load_npy(path)
    if not isinstance(table, dict):
        raise ReleasedTreeError(f"{path}: expected a dict of class name -> vector")
    manual = read_manual_names(root, dataset)
    assign = class_text_assignment(splits.all_classes, manual, list(table), legacy_reference_order)
    names = splits.all_classes
    vectors = np.stack([np.asarray(table[assign[c]], np.float32) for c in names])
    misassigned = sum(assign[c] != manual.get(c, assign[c]) for c in names)
    write_text_store(out, names, [assign[c] for c in names], vectors, encoder="released_fasttext",
                     encoder_config={"source": str(path.name), "legacy_reference_order": legacy_reference_order},
                     normalized=True)
    return {"classes": len(names), "misassigned": int(misassigned)}
