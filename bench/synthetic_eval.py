"""How hard the synthetic benchmark (bench/synthetic_features.py) is for the project's models.

Each model trains for one short stage-1 epoch (``--steps`` class-balanced batches through the engine's own
``train_epoch``) with its hyper-parameters for the dataset's main profile, then is scored once on stage-1 validation
(val_seen + val_unseen, calibrated stacking as in training). Prints one JSON line per model: S, U, HM and ZSL in
percent, the chance levels (1 / number of classes searched) and the seconds spent.

    python -m bench.synthetic_eval --models daan_base,daan_qdma --steps 60
    python -m bench.synthetic_eval --models daan_qdma --override '{"model": {"diff_weight": 0.0}}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.synthetic_features import dataset_name, make_benchmark
from extractors.feature_store import FeatureStore
from training.config import RunConfig, TrainConfig, resolve_hparams
from training.data.sampler import ClassBalancedSampler
from training.engine import (
    build_for_data,
    evaluate_split,
    load_data,
    resolve_device,
    seed_everything,
    train_epoch,
)

PROFILES = {"UCF": "ucf", "ActivityNet": "activitynet", "VGGSound": "vggsound"}


def benchmark_paths(folder: Path, dataset: str, seed: int, scale: float) -> dict:
    """The benchmark in ``folder``, written there unless a previous call did."""
    paths = {"features": str(folder / "features.h5"), "splits": str(folder / "splits"), "text": str(folder / "text.h5")}
    if Path(paths["features"]).exists():
        stored = json.loads(FeatureStore(paths["features"]).attrs.get("extractor_config", "{}"))
        wanted = {"dataset": dataset, "seed": seed, "scale": scale}
        if {k: stored.get(k) for k in wanted} != wanted:
            raise SystemExit(f"{folder} holds another benchmark ({ {k: stored.get(k) for k in wanted} }); "
                             f"use a new folder for {wanted}")
        return paths
    return make_benchmark(folder, dataset, seed=seed, scale=scale)


def evaluate_model(model_name: str, paths: dict, dataset: str, steps: int, batch_size: int | None, seed: int,
                   device: str, overrides: dict | None = None) -> dict:
    hp = resolve_hparams(model_name, PROFILES[dataset], "main", overrides)
    train = {**hp["train"], "n_batches": steps, "epochs": 1}
    if batch_size:
        train["batch_size"] = batch_size
    cfg = RunConfig(model=model_name, seed=seed, train=TrainConfig.from_dict(train), model_params=hp["model"],
                    device=device, **paths)
    dev = resolve_device(device)
    seed_everything(seed, deterministic=False)
    t0 = time.perf_counter()
    data = load_data(cfg, 1, dev)
    model = build_for_data(cfg, data, dev)
    optimizers = model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
    generator = torch.Generator(device=dev).manual_seed(seed)
    sampler = ClassBalancedSampler(data.train_labels, cfg.train.batch_size, steps, generator)
    t1 = time.perf_counter()
    losses = train_epoch(model, data, sampler, optimizers, generator)
    t2 = time.perf_counter()
    val = evaluate_split(model, data, data.val, cfg).main
    t3 = time.perf_counter()
    n_seen, n_unseen = len(data.val.seen), len(data.val.unseen)
    return {"model": model_name, "dataset": dataset, "override": overrides or {}, "steps": steps,
            "batch_size": cfg.train.batch_size, **{k: round(v, 2) for k, v in val.percent().items()},
            "chance_gzsl": round(100 / (n_seen + n_unseen), 2), "chance_zsl": round(100 / n_unseen, 2),
            "loss": round(losses["loss"], 4),
            "stats": {k: round(v, 4) for k, v in losses.items() if "." in k},  # e.g. CSGM's η per part, epoch mean
            "load_s": round(t1 - t0, 1), "train_s": round(t2 - t1, 1),
            "eval_s": round(t3 - t2, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="daan_base,daan_qdma", help="comma-separated model names")
    ap.add_argument("--steps", type=int, default=60, help="training batches (one epoch)")
    ap.add_argument("--batch-size", type=int, default=256, help="0: the model's own setting")
    ap.add_argument("--dataset", default="UCF")
    ap.add_argument("--scale", type=float, default=1.0, help="benchmark size (bench/synthetic_features.py)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the benchmark and the training")
    ap.add_argument("--override", default="", help='resolve_hparams overrides, e.g. \'{"model": {"diff_weight": 0}}\'')
    ap.add_argument("--data", help="benchmark folder to reuse (written there on first use)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = dataset_name(args.dataset)
    overrides = json.loads(args.override) if args.override else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = benchmark_paths(folder, dataset, args.seed, args.scale)
        for name in args.models.split(","):
            print(json.dumps(evaluate_model(name, paths, dataset, args.steps, args.batch_size or None, args.seed,
                                            args.device, overrides)), flush=True)


if __name__ == "__main__":
    main()
