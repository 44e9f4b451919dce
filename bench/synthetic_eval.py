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

from bench import sequence_features, synthetic_features
from bench.synthetic_features import dataset_name
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


# the synthetic benchmarks by name: the first (a class signal over most seconds) and the ordered-motif one
GENERATORS = {"synthetic": synthetic_features.make_benchmark, "sequence": sequence_features.make_benchmark}


def benchmark_paths(folder: Path, dataset: str, seed: int, scale: float, generator: str = "synthetic") -> dict:
    """The benchmark in ``folder``, written there by ``generator`` unless a previous call did."""
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; known: {', '.join(GENERATORS)}")
    paths = {"features": str(folder / "features.h5"), "splits": str(folder / "splits"), "text": str(folder / "text.h5")}
    if Path(paths["features"]).exists():
        stored = json.loads(FeatureStore(paths["features"]).attrs.get("extractor_config", "{}"))
        stored.setdefault("generator", "synthetic")  # the first generator does not name itself
        wanted = {"generator": generator, "dataset": dataset, "seed": seed, "scale": scale}
        if {k: stored.get(k) for k in wanted} != wanted:
            raise SystemExit(f"{folder} holds another benchmark ({ {k: stored.get(k) for k in wanted} }); "
                             f"use a new folder for {wanted}")
        return paths
    return GENERATORS[generator](folder, dataset, seed=seed, scale=scale)


class _DrawnEpoch:
    """One epoch of batches drawn up front, handed to ``train_epoch`` a slice at a time: training in slices with
    evaluations between them takes exactly the batches (and random crops) of one uninterrupted epoch."""

    def __init__(self, pos: torch.Tensor, neg: torch.Tensor | None, start: int, stop: int):
        self.pos, self.neg, self.start, self.stop = pos, neg, start, stop
        self.n_batches = stop - start

    def epoch(self) -> torch.Tensor:
        return self.pos[self.start:self.stop]

    def negatives(self, positions: torch.Tensor) -> torch.Tensor:
        return self.neg[self.start:self.stop]


def _rounded(losses: dict[str, float]) -> tuple[float, dict[str, float]]:
    return round(losses["loss"], 4), {k: round(v, 4) for k, v in losses.items() if "." in k}


def evaluate_model(model_name: str, paths: dict, dataset: str, steps: int, batch_size: int | None, seed: int,
                   device: str, overrides: dict | None = None, eval_every: int = 0) -> dict:
    """Train ``steps`` batches and score stage-1 validation at the end; with ``eval_every`` also after every
    ``eval_every`` batches (``curve``: the scores, mean loss and training statistics of each interval)."""
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
    pos = sampler.epoch()
    neg = sampler.negatives(pos) if model.needs_negatives else None
    t1 = time.perf_counter()
    ends = list(range(eval_every, steps, eval_every)) + [steps] if eval_every > 0 else [steps]
    curve, sums, train_s, eval_s, start = [], {}, 0.0, 0.0, 0
    for stop in ends:
        t = time.perf_counter()
        losses = train_epoch(model, data, _DrawnEpoch(pos, neg, start, stop), optimizers, generator)
        train_s += time.perf_counter() - t
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v * (stop - start)
        t = time.perf_counter()
        val = evaluate_split(model, data, data.val, cfg).main
        eval_s += time.perf_counter() - t
        loss, stats = _rounded(losses)
        curve.append({"step": stop, **{k: round(v, 2) for k, v in val.percent().items()}, "loss": loss,
                      "stats": stats})
        start = stop
    loss, stats = _rounded({k: v / steps for k, v in sums.items()} if len(ends) > 1 else losses)
    n_seen, n_unseen = len(data.val.seen), len(data.val.unseen)
    result = {"model": model_name, "dataset": dataset, "override": overrides or {}, "steps": steps,
              "batch_size": cfg.train.batch_size, **{k: round(v, 2) for k, v in val.percent().items()},
              "chance_gzsl": round(100 / (n_seen + n_unseen), 2), "chance_zsl": round(100 / n_unseen, 2),
              "loss": loss, "stats": stats,  # e.g. CSGM's η per part, mean over the steps
              "load_s": round(t1 - t0, 1), "train_s": round(train_s, 1), "eval_s": round(eval_s, 1)}
    return {**result, "eval_every": eval_every, "curve": curve} if eval_every > 0 else result


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
    ap.add_argument("--generator", default="synthetic", choices=list(GENERATORS), help="which synthetic benchmark")
    ap.add_argument("--eval-every", type=int, default=0, help="also score validation every N steps (0: at the end)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = dataset_name(args.dataset)
    overrides = json.loads(args.override) if args.override else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = benchmark_paths(folder, dataset, args.seed, args.scale, args.generator)
        for name in args.models.split(","):
            print(json.dumps(evaluate_model(name, paths, dataset, args.steps, args.batch_size or None, args.seed,
                                            args.device, overrides, args.eval_every)), flush=True)


if __name__ == "__main__":
    main()
