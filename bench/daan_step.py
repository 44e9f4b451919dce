"""DAAN's training step against AVCA's, on the same batch and machine.

One batch of a UCF-size synthetic dataset (bench/train_throughput.py; 512-d features, 3-12 steps per video, batch
256, negatives drawn as in training), UCF hyper-parameters for every model. Reports the median step time of AVCA,
DAAN, DAAN without QDMA and CSGM (the Base variant) and without CSGM (Base + QDMA), the ratio DAAN / AVCA, and
CSGM's share of DAAN's step: the time spent in CSGM's modulation (per-sample norms, rates, the modulated gradient
and its noise) over the step time, read from the profiler range DAAN's step marks (``CSGM_RANGE``) in a separate
profiled pass. With CSGM the backward pass skips the QDMA parts' ordinary weight gradients
(CSGM writes them), so DAAN's step can be as fast as Base + QDMA's.

``--precision bf16`` runs every model's whole step under bf16 autocast (matrix products in bf16, AMX on recent Xeons,
tensor cores on GPUs), to show how much of the gap is arithmetic: the project trains in fp32.

    python -m bench.daan_step --device cpu
    python -m bench.daan_step --device cpu --precision bf16
    python -m bench.daan_step --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.train_throughput import dataset_paths, machine, sync
from training.config import RunConfig, TrainConfig, resolve_hparams
from training.data.sampler import ClassBalancedSampler
from training.engine import build_for_data, load_data, resolve_device
from training.models.daan import CSGM_RANGE


def step_times(model_name: str, paths: dict, device: str, batch_size: int, repeats: int, seed: int = 0,
               precision: str = "fp32") -> tuple[list[float], float | None]:
    """Seconds of each timed training step on one fixed batch, and the median milliseconds DAAN spends in CSGM's
    modulation per step (read from the model's profiler range, in a separate profiled pass; None for other models)."""
    hp = resolve_hparams(model_name, "ucf", "main")
    cfg = RunConfig(model=model_name, seed=seed, train=TrainConfig.from_dict({**hp["train"], "batch_size": batch_size}),
                    model_params=hp["model"], device=device, **paths)
    dev = resolve_device(device)
    data = load_data(cfg, 1, dev)
    torch.manual_seed(seed)
    model = build_for_data(cfg, data, dev)
    opt = model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
    gen = torch.Generator(device=dev).manual_seed(seed)
    sampler = ClassBalancedSampler(data.train_labels, batch_size, 1, gen)
    pos = sampler.epoch()[0]
    batch = data.batch(pos, sampler.negatives(pos), generator=torch.Generator(device=dev).manual_seed(1))
    model.train()
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(repeats + 3):
        sync(dev)
        t0 = time.perf_counter()
        with autocast:
            model.train_step(batch, opt)
        sync(dev)
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    return times, _csgm_ms(model, batch, opt, dev, autocast, repeats) if model_name == "daan" else None


def _csgm_ms(model, batch, opt, dev: torch.device, autocast, repeats: int) -> float:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            with autocast:
                model.train_step(batch, opt)
        sync(dev)
    event = next(e for e in prof.key_averages() if e.key == CSGM_RANGE)
    micros = event.cpu_time_total if dev.type != "cuda" else max(event.cpu_time_total, event.device_time_total)
    return micros / event.count / 1000


def matmul_gflops(dev: torch.device, dtype: torch.dtype, repeats: int = 20) -> float:
    """Throughput of a 6144x512 @ 512x512 product (QDMA's W_V at batch 512, 12 steps): the machine's practical peak
    for the products DAAN's step is made of."""
    a = torch.randn(6144, 512, device=dev, dtype=dtype)
    b = torch.randn(512, 512, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(dev)
    return 2 * 6144 * 512 * 512 * repeats / (time.perf_counter() - t0) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--data", help="reuse a synthetic dataset folder")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: whole step under autocast")
    ap.add_argument("--data-scale", type=float, default=1.0, help="a fraction of UCF's videos (dry runs)")
    args = ap.parse_args()
    print(f"# machine: {machine()}")
    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = dataset_paths(Path(args.data or tmp), args.data_scale)
        runs = {m: step_times(m, paths, args.device, args.batch_size, args.repeats, precision=args.precision)
                for m in ("avca", "daan_base", "daan_qdma", "daan")}
    med = {m: statistics.median(times) for m, (times, _) in runs.items()}
    csgm = runs["daan"][1] / 1000
    print(json.dumps({
        "device": str(dev), "batch_size": args.batch_size, "precision": args.precision,
        "avca_ms": round(1000 * med["avca"], 2), "daan_ms": round(1000 * med["daan"], 2),
        "daan_base_ms": round(1000 * med["daan_base"], 2),
        "daan_without_csgm_ms": round(1000 * med["daan_qdma"], 2),
        "daan_over_avca": round(med["daan"] / med["avca"], 3),
        "csgm_ms": round(1000 * csgm, 2),
        "csgm_share_of_daan_step": round(csgm / med["daan"], 3),
        "matmul_gflops": round(matmul_gflops(dev, torch.bfloat16 if args.precision == "bf16" else torch.float32)),
    }))


if __name__ == "__main__":
    main()
