"""Fabricate a released-AVCA feature tree from the official split files (test helper, not a test module)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from extractors.sources.released_avca import READ_STAGES


def _official_tree(splits_root: Path, out_root: Path, dataset: str) -> tuple[Path, dict, str]:
    """The dataset folder with the official class-split files; the official per-class row order; the text file key."""
    dst = out_root / dataset
    shutil.copytree(splits_root / "avgzsl_benchmark_datasets" / dataset / "class-split", dst / "class-split")
    order = json.loads((splits_root / "derived" / "feature_file_order" / f"{dataset}_features_h5_order.json").read_text())
    return dst, order, {"UCF": "ucf", "ActivityNet": "activity", "VGGSound": "vggsound"}[dataset]


def fabricate_tree(splits_root: Path, out_root: Path, dataset: str = "UCF", dims: dict | None = None,
                   seed: int = 0, feature_sets=("main", "cls")) -> Path:
    """``<out_root>/<dataset>/`` with the official class-split files, per-class h5 files in the official row order
    (random features whose class means differ, so a model can learn something) and the reference text .npy."""
    dims = dims or {"main": (512, 512), "cls": (128, 4096)}
    dst, order, key = _official_tree(splits_root, out_root, dataset)
    rng = np.random.default_rng(seed)
    for fs in feature_sets:
        fdir = dst / "features" / {"main": "main_features", "cls": "cls_features"}[fs]
        d_audio, d_video = dims[fs]
        centres = {}
        for stage_class, videos in order.items():
            stage, cls = stage_class.split("/", 1)
            if stage not in READ_STAGES:
                continue
            for mod, d in (("audio", d_audio), ("video", d_video)):
                c = centres.setdefault((mod, cls.casefold()), rng.normal(size=d).astype(np.float32))
                data = c + rng.normal(scale=2.0, size=(len(videos), d)).astype(np.float32)
                path = fdir / mod / stage / f"{cls}.h5"
                path.parent.mkdir(parents=True, exist_ok=True)
                with h5py.File(path, "w") as f:
                    f.create_dataset("data", data=data)
                    f.create_dataset("video_urls", data=np.array(videos, dtype=object), dtype=h5py.string_dtype())
        (fdir / "text").mkdir(parents=True, exist_ok=True)
        shutil.copy(splits_root / "w2v_features" / f"word_embeddings_{key}_normed.npy", fdir / "text")
    return out_root


def fabricate_tcaf_tree(splits_root: Path, out_root: Path, dataset: str = "UCF", dims: dict | None = None,
                        seed: int = 0, feature_sets=("main",)) -> Path:
    """The TCaF layout: per-class pickles {features: [(T_i, D)], video_names: [bytes], fps: [25]}, official row order,
    random per-step features (3-12 steps) around class centres."""
    import pickle

    dims = dims or {"main": (512, 512), "cls": (128, 4096)}
    dst, order, key = _official_tree(splits_root, out_root, dataset)
    rng = np.random.default_rng(seed)
    for fs in feature_sets:
        fdir = dst / "features" / {"main": "main_features_non_averaged", "cls": "cls_features_non_averaged"}[fs]
        centres = {}
        for stage_class, videos in order.items():
            stage, cls = stage_class.split("/", 1)
            if stage not in READ_STAGES:
                continue
            for mod, d in zip(("audio", "video"), dims[fs]):
                c = centres.setdefault((mod, cls.casefold()), rng.normal(size=d).astype(np.float32))
                feats = [c + rng.normal(scale=2.0, size=(int(rng.integers(3, 13)), d)).astype(np.float32)
                         for _ in videos]
                path = fdir / mod / stage / f"{cls}.pkl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(pickle.dumps({"features": feats, "video_names": [v.encode() for v in videos],
                                               "fps": [25] * len(videos)}))
        (fdir / "text").mkdir(parents=True, exist_ok=True)
        shutil.copy(splits_root / "w2v_features" / f"word_embeddings_{key}_normed.npy", fdir / "text")
    return out_root
