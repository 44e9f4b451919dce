"""Training throughput on UCF-size synthetic data.

Builds a synthetic dataset shaped like UCF-GZSL main (30 training, 12 unseen validation and 9 unseen test classes;
6,816 videos; 512-d audio and video, per-second sequences of 3-12 steps; 300-d text), then times one epoch of the
engine's own training loop (class-balanced sampling, negatives, batch gathering by indexing, the model's train_step)
for each model, plus the validation pass. Prints seconds per epoch and the share of the training time spent outside
the model's forward/backward/optimiser step.

    python bench/train_throughput.py --models avca --device cpu
    python bench/train_throughput.py --models all --batches 100       # shorter run, scaled to 500 batches
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from extractors.feature_store import StoreSpec, VideoFeatures, write_store
from extractors.splits import Splits, write_splits
from extractors.text_store import write_text_store
from training.config import RunConfig, TrainConfig, resolve_hparams
from training.data.sampler import ClassBalancedSampler
from training.engine import build_for_data, evaluate_split, load_data, resolve_device, train_epoch
from training.models import MODELS

# UCF-GZSL main: (classes, videos) per stage, reference-protocol §4
UCF = {"stage_1_train": (30, 3174), "stage_1_val_seen": (30, 353), "stage_1_val_unseen": (12, 1467),
       "stage_2_test_seen": (42, 555), "stage_2_test_unseen": (9, 1267)}


def make_ucf_like(root: Path, dim: int = 512, text_dim: int = 300, seed: int = 0, scale: float = 1.0) -> dict:
    """``scale``: that fraction of every stage's videos (at least 4 per class; for dry runs)."""
    rng = np.random.default_rng(seed)
    classes = [f"class{i:02d}" for i in range(51)]
    train, val_unseen, test_unseen = classes[:30], classes[30:42], classes[42:]
    stage_classes = {"stage_1_train": train, "stage_1_val_seen": train, "stage_1_val_unseen": val_unseen,
                     "stage_2_test_seen": train + val_unseen, "stage_2_test_unseen": test_unseen}
    centres = {c: rng.normal(size=(2, dim)).astype(np.float32) for c in classes}
    videos, split_videos = [], {}
    for stage, (_, n) in UCF.items():
        cls = stage_classes[stage]
        n = max(4 * len(cls), int(n * scale)) if scale < 1 else n
        split_videos[stage] = []
        for i in range(n):
            c = cls[i % len(cls)]
            vid = f"{stage}_{i:05d}"
            t = int(rng.integers(3, 13))
            a = centres[c][0] + rng.normal(scale=1.5, size=(t, dim)).astype(np.float32)
            v = centres[c][1] + rng.normal(scale=1.5, size=(t, dim)).astype(np.float32)
            videos.append(VideoFeatures(vid, c, audio_seq=a, video_seq=v))
            split_videos[stage].append((vid, c))
    split_videos["stage_2_train"] = (split_videos["stage_1_train"] + split_videos["stage_1_val_seen"]
                                     + split_videos["stage_1_val_unseen"])
    spec = StoreSpec(audio_dim=dim, video_dim=dim, has_sequences=True, extractor="synthetic")
    write_store(root / "features.h5", spec, videos)
    splits = Splits(sorted(classes), {**{k: sorted(v) for k, v in stage_classes.items()},
                                      "stage_2_train": sorted(train + val_unseen)}, split_videos)
    write_splits(root / "splits", splits)
    text = rng.normal(size=(len(classes), text_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    write_text_store(root / "text.h5", classes, classes, text, "synthetic")
    return {"features": str(root / "features.h5"), "splits": str(root / "splits"), "text": str(root / "text.h5")}


def dataset_paths(folder: Path, scale: float = 1.0) -> dict:
    """The synthetic dataset in ``folder``, made there on first use (``scale``: see :func:`make_ucf_like`)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "features.h5").exists():
        return {"features": str(folder / "features.h5"), "splits": str(folder / "splits"),
                "text": str(folder / "text.h5")}
    return make_ucf_like(folder, scale=scale)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(model_name: str, paths: dict, device: str, batches: int, batch_size: int | None, profile: str) -> dict:
    hp = resolve_hparams(model_name, profile, "main")
    train = {**hp["train"], "n_batches": batches}
    if batch_size:
        train["batch_size"] = batch_size
    cfg = RunConfig(model=model_name, seed=0, train=TrainConfig.from_dict(train), model_params=hp["model"],
                    device=device, **paths)
    dev = resolve_device(device)
    torch.manual_seed(0)
    data = load_data(cfg, 1, dev)
    model = build_for_data(cfg, data, dev)
    optimizers = model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
    gen = torch.Generator(device=dev).manual_seed(0)
    sampler = ClassBalancedSampler(data.train_labels, cfg.train.batch_size, batches, gen)
    for _ in range(3):  # warm-up (allocator, kernels) outside the timed epoch
        train_epoch(model, data, ClassBalancedSampler(data.train_labels, cfg.train.batch_size, 1, gen), optimizers,
                    gen)
    step_seconds = []

    @contextlib.contextmanager
    def timed_step():
        sync(dev)
        s = time.perf_counter()
        yield
        sync(dev)
        step_seconds.append(time.perf_counter() - s)

    sync(dev)
    t0 = time.perf_counter()
    train_epoch(model, data, sampler, optimizers, gen, step=timed_step)
    sync(dev)
    train_time = time.perf_counter() - t0
    step_time = sum(step_seconds)
    s = time.perf_counter()
    evaluate_split(model, data, data.val, cfg)
    sync(dev)
    val_time = time.perf_counter() - s
    scale = 500 / batches
    return {"model": model_name, "device": str(dev), "batch_size": cfg.train.batch_size, "timed_batches": batches,
            "train_s_per_500_batches": round(train_time * scale, 2),
            "epoch_s_500_batches_plus_val": round(train_time * scale + val_time, 2),
            "validation_s": round(val_time, 2),
            "outside_forward_backward_share": round(1 - step_time / train_time, 4),
            "ms_per_step": round(1000 * step_time / batches, 2)}


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {gpu}, "
            f"torch {torch.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="avca", help="comma-separated names, or 'all'")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", type=int, default=500, help="timed batches (results are scaled to 500)")
    ap.add_argument("--batch-size", type=int, default=256, help="0: each model's own UCF setting")
    ap.add_argument("--profile", default="ucf")
    ap.add_argument("--data", help="reuse a synthetic dataset folder")
    ap.add_argument("--data-scale", type=float, default=1.0, help="a fraction of UCF's videos (dry runs)")
    args = ap.parse_args()
    names = sorted(MODELS) if args.models == "all" else args.models.split(",")
    print(f"# machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataset_paths(Path(args.data or tmp), args.data_scale)
        for name in names:
            print(json.dumps(time_epoch(name, paths, args.device, args.batches, args.batch_size or None, args.profile)),
                  flush=True)


if __name__ == "__main__":
    main()
