"""Where extraction's time goes, per backbone, in one run: decoding, preprocessing, the network, the whole.

For each feature set the same clips (by default the real clips of tests/fixtures/reference, each listed
``--repeat`` times) go through:

- pure decoding at the backbone's input format (``decode_stream``, nothing else);
- decoding + preprocessing (``stream_windows``: resampling, resizing, cropping, spectrograms) in this process; the
  preprocessing time is the difference;
- the network alone on the ready windows (``Backbone.embed`` on full batches of ``--batch-windows``), in today's
  layout (NCDHW weights) and channels-last (channels_last_3d weights) in fp32, and channels-last under bf16 autocast
  (NCDHW too with ``--precision bf16``): seconds
  per window, and GFLOP per window from ``torch.utils.flop_counter`` (hence GFLOP/s); the bf16 outputs are compared
  with the fp32 ones on the same real windows (max abs diff relative to max |fp32|, cosine);
- the whole extraction (``extract_shard``: decode workers, windows pooled across videos, the network, the store), as
  today (NCDHW weights, 1 decode worker at normal priority beside ``--threads`` torch threads) and as now
  (channels-last, threads and workers from :func:`extractors.extract.plan_threads` for ``--threads`` cores);
  the two stores are compared (max abs diff relative to max |feature|);
- the machine's matrix rate (fp32 2048² products on the same threads), measured before every feature set; the
  median is reported.

The ratio to keep is whole / network: the extraction's windows per second over the network-only rate on the
batches the extraction runs (its last, padded batch included), with the same layout. The networks get random
weights in their official checkpoint layouts (speed does not depend on the values). Prints a Markdown report and,
with ``--json``, writes every figure.

    python -m bench.extract_throughput --device cpu --threads 2
    python -m bench.extract_throughput --device cuda --precision bf16 --threads 8 --batch-windows 64 --repeat 8
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.official_layouts import selavi_state, write_c3d, write_selavi, write_vggish
from extractors.backbones.base import MODALITIES, build_feature_set, stream_windows
from extractors.extract import ExtractOptions, extract_shard, plan_threads, resolve_device, to_channels_last
from extractors.feature_store import FeatureStore
from extractors.media.decode import decode_stream
from extractors.sources.manifest import ManifestRow, read_manifest, resolve_media, write_manifest

CLIPS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "reference" / "clips"
# the fixture clips with an audio stream and at least 3 s (c07/c08 are 1.6 s, c09 has no audio)
DEFAULT_CLIPS = ("c01", "c02", "c03", "c04", "c05", "c06", "c10")


def random_checkpoints(folder: Path, names: set[str]) -> dict[str, str]:
    """Random weights in each official layout (SeLaVi's DDP dict, C3D's legacy file, VGGish + its PCA)."""
    paths = {}
    if "selavi" in names:
        paths["selavi"] = write_selavi(folder / "selavi_vgg_sound.pth", selavi_state())
    if "c3d" in names:
        paths.update(c3d=write_c3d(folder / "c3d.pickle"), vggish=write_vggish(folder)["vggish_embeddings"],
                     pca=folder / "vggish_pca_params.npz")
    if "r2plus1d_18" in names:
        import torchvision

        paths["r2plus1d_18"] = folder / "r2plus1d_18.pth"
        torch.save(torchvision.models.video.r2plus1d_18(weights=None).state_dict(), paths["r2plus1d_18"])
    return {name: str(p) for name, p in paths.items()}


FEATURE_SETS = {
    "handcrafted": ("handcrafted (no network; the dry run's)", set(),
                    lambda w: {"backbone": "handcrafted", "params": {}}),
    "selavi": ("SeLaVi (main)", {"selavi"},
               lambda w: {"backbone": "selavi", "params": {"weights": w["selavi"]}}),
    "c3d_vggish": ("C3D + VGGish (cls)", {"c3d"},
                   lambda w: {"audio": {"backbone": "vggish", "params": {"weights": w["vggish"], "pca": w["pca"]}},
                              "video": {"backbone": "c3d", "params": {"weights": w["c3d"]}}}),
    "r2plus1d": ("torchvision_video r2plus1d_18 (plugin) + handcrafted audio", {"r2plus1d_18"},
                 lambda w: {"backbone": "handcrafted", "params": {},
                            "video": {"backbone": "torchvision_video",
                                      "params": {"model": "r2plus1d_18", "weights": w["r2plus1d_18"]}}}),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matrix_gflops(device: torch.device, dtype=torch.float32, n: int = 2048, seconds: float = 1.0) -> float:
    """The machine's matrix rate: n x n products for about ``seconds``, best of three rounds."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = 0.0
    for _ in range(3):
        k, t0 = 0, time.perf_counter()
        while True:
            a @ b
            k += 1
            sync(device)
            if time.perf_counter() - t0 > seconds / 3:
                break
        best = max(best, 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9)
    return best


def make_manifest(folder: Path, clips: list[Path], repeat: int) -> Path:
    rows = [ManifestRow(f"{p.stem}_{i}", str(p), "c") for i in range(repeat) for p in clips]
    path = folder / "manifest.csv"
    write_manifest(path, rows)
    return path


def decode_and_preprocess(manifest: Path, backbone) -> dict:
    """Pure decoding, then decoding + windowing, of every clip; the windows (ready tensors) per modality."""
    fmt = backbone.input_format
    rows = read_manifest(manifest)
    seconds, t0 = 0.0, time.perf_counter()
    for row in rows:
        for piece in decode_stream(resolve_media(manifest, row), **fmt.decode_options(), chunk_seconds=60.0):
            if piece.final:
                seconds += piece.duration
    decode = time.perf_counter() - t0
    windows = {m: [] for m in MODALITIES}
    t0 = time.perf_counter()
    for row in rows:
        pieces = decode_stream(resolve_media(manifest, row), **fmt.decode_options(), chunk_seconds=60.0)
        for piece in stream_windows(backbone, pieces):
            for m, w in piece.windows.items():
                windows[m].append(w[:piece.counts[m]] if piece.final else w)
    both = time.perf_counter() - t0
    return {"video_seconds": seconds, "decode_s": decode, "preprocess_s": max(0.0, both - decode),
            "windows": {m: torch.cat(w) for m, w in windows.items() if w}}


@torch.inference_mode()
def network(backbone, modality: str, windows: torch.Tensor, batch: int, device: torch.device, precision: str,
            reps: int) -> dict:
    """Seconds per window of ``embed`` on full batches of real windows (best of ``reps`` after a warm-up), GFLOP per
    window, and the outputs of the timed batches (for the bf16 comparison)."""
    need = batch * (reps + 1)
    x_all = windows[torch.arange(need) % len(windows)]
    auto = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times, outs = [], []
    for r in range(reps + 1):
        x = x_all[r * batch:(r + 1) * batch].to(device)
        sync(device)
        t0 = time.perf_counter()
        with auto:
            y = backbone.embed(modality, x).float()
        sync(device)
        if r:
            times.append(time.perf_counter() - t0)
            outs.append(y.cpu())
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, auto:
        backbone.embed(modality, x_all[:1].to(device))
    return {"s_per_window": min(times) / batch, "gflop_per_window": fc.get_total_flops() / 1e9,
            "outputs": torch.cat(outs)}


def deviation(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return {"max_abs_diff": float((a - b).abs().max()), "rel_max_abs_diff": float((a - b).abs().max() / a.abs().max()),
            "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}


def whole(manifest: Path, spec: dict, out: Path, opts: ExtractOptions) -> float:
    t0 = time.perf_counter()
    stats = extract_shard(manifest, 0, 1, spec, None, out, opts)
    wall = time.perf_counter() - t0
    assert not stats["failed"], stats
    return wall


def store_diff(a: Path, b: Path) -> float:
    """Max abs diff between two stores' features, relative to max |feature| (per modality, the larger)."""
    sa, sb = FeatureStore(a), FeatureStore(b)
    ids = list(sa.ids)
    worst = 0.0
    for m in MODALITIES:
        x = np.asarray(sa.sequences(m, sa.rows(ids))[0], np.float64)
        y = np.asarray(sb.sequences(m, sb.rows(ids))[0], np.float64)
        if x.size:
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


def bench_set(key: str, manifest: Path, weights: dict, tmp: Path, args, device: torch.device) -> dict:
    title, _, make = FEATURE_SETS[key]
    spec = make(weights)
    res: dict = {"name": title, "matrix_gflops_fp32": matrix_gflops(device)}
    backbone = build_feature_set(spec).to(device).eval()
    prep = decode_and_preprocess(manifest, backbone)
    res.update({k: v for k, v in prep.items() if k != "windows"})
    windows = prep["windows"]
    counts = {m: len(w) for m, w in windows.items()}
    res["windows"] = counts
    batch = args.batch_windows
    # the network alone: per modality, today's layout and channels-last, fp32 and bf16
    layouts = {"ncdhw": backbone, "channels_last": to_channels_last(build_feature_set(spec).to(device).eval())}
    net = {}
    for m, w in windows.items():
        net[m] = {}
        runs = [("ncdhw", "fp32"), ("channels_last", "fp32")] + ([] if args.no_bf16 else [("channels_last", "bf16")])
        if args.precision == "bf16" and args.no_bf16:
            raise SystemExit("--precision bf16 needs the bf16 network timings: drop --no-bf16")
        if args.precision == "bf16":
            runs.append(("ncdhw", "bf16"))
        for lay, prec in runs:
            net[m][f"{lay}_{prec}"] = network(layouts[lay], m, w, batch, device, prec, args.reps)
        ref = net[m]["channels_last_fp32"]["outputs"]
        for r in net[m].values():
            r["deviation"] = deviation(ref, r.pop("outputs"))
    res["network"] = net
    # the network time the extraction cannot avoid: every batch it runs (the last one padded) at the timed rate
    batches = {m: math.ceil(n / batch) for m, n in counts.items()}
    res["network_s"] = {lay: sum(batches[m] * batch * net[m][f"{lay}_{args.precision}"]["s_per_window"]
                                 for m in counts) for lay in layouts}
    res["padding"] = 1 - sum(counts.values()) / (batch * sum(batches.values()))
    # the whole extraction, today and now
    base = dict(batch_windows=batch, device=str(device), progress=False, precision=args.precision)
    today = ExtractOptions(**base, workers=1, idle_workers=False, channels_last=False)
    now = ExtractOptions(**base, threads=args.threads)
    res["plan"] = dataclasses.asdict(plan_threads(args.threads, device.type))
    res["whole_s"] = {"today": whole(manifest, spec, tmp / f"{key}_today.h5", today),
                      "now": whole(manifest, spec, tmp / f"{key}_now.h5", now)}
    res["store_rel_diff_today_vs_now"] = store_diff(tmp / f"{key}_today.h5", tmp / f"{key}_now.h5")
    n = sum(counts.values())
    res["rates"] = {
        "network_today_windows_s": n / res["network_s"]["ncdhw"],
        "network_now_windows_s": n / res["network_s"]["channels_last"],
        "whole_today_windows_s": n / res["whole_s"]["today"],
        "whole_now_windows_s": n / res["whole_s"]["now"],
        "whole_over_network_today": res["network_s"]["ncdhw"] / res["whole_s"]["today"],
        "whole_over_network_now": res["network_s"]["channels_last"] / res["whole_s"]["now"],
        "whole_now_over_today": res["whole_s"]["today"] / res["whole_s"]["now"],
        "decode_video_s_per_s": res["video_seconds"] / res["decode_s"],
        "decode_share_of_network": (res["decode_s"] + res["preprocess_s"]) / res["network_s"]["channels_last"],
    }
    return res


def report(results: list[dict], args, device: torch.device) -> str:
    mat = statistics.median(r["matrix_gflops_fp32"] for r in results)
    lines = [f"# {platform.machine()} {platform.processor() or ''}, {args.threads} cores/threads, torch "
             f"{torch.__version__}, device {device}, whole extraction in {args.precision}, batches of "
             f"{args.batch_windows} windows; matrix rate (fp32, median of the run) {mat:.0f} GFLOP/s", "",
             "| backbone | video-s | windows (a + v) | decode (video-s/s) | decode + preprocess / network | network "
             "today / now (windows/s) | whole today / now (windows/s) | whole / network today | whole / network now "
             "| now / today (whole) | features today vs now (rel) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        q = r["rates"]
        lines.append(
            f"| {r['name']} | {r['video_seconds']:.1f} | {r['windows'].get('audio', 0)} + {r['windows'].get('video', 0)}"
            f" | {q['decode_video_s_per_s']:.1f} | {q['decode_share_of_network']:.3f} | "
            f"{q['network_today_windows_s']:.3f} / {q['network_now_windows_s']:.3f} | {q['whole_today_windows_s']:.3f} /"
            f" {q['whole_now_windows_s']:.3f} | {q['whole_over_network_today']:.2f} | {q['whole_over_network_now']:.2f}"
            f" | {q['whole_now_over_today']:.2f} | {r['store_rel_diff_today_vs_now']:.1e} |")
    lines += ["", "| backbone | modality | GFLOP / window | layout, precision | s / window | GFLOP/s | / matrix rate | "
              "speed-up vs NCDHW fp32 | vs channels-last fp32: max abs diff (rel), cos min |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for m, net in r["network"].items():
            base = net["ncdhw_fp32"]["s_per_window"]
            for k, x in net.items():
                gf = x["gflop_per_window"] / x["s_per_window"]
                d = x["deviation"]
                lines.append(f"| {r['name']} | {m} | {x['gflop_per_window']:.1f} | {k} | {x['s_per_window']:.3f} | "
                             f"{gf:.0f} | {gf / mat:.2f} | {base / x['s_per_window']:.2f} | {d['max_abs_diff']:.2e} "
                             f"({d['rel_max_abs_diff']:.1e}), {d['cos_min']:.6f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="selavi,c3d_vggish,r2plus1d", help=f"comma-separated, of {list(FEATURE_SETS)}")
    ap.add_argument("--clips", default=",".join(DEFAULT_CLIPS), help="fixture clips (name prefixes)")
    ap.add_argument("--repeat", type=int, default=1, help="list every clip this many times")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="of the whole extraction")
    ap.add_argument("--no-bf16", action="store_true", help="time the network in fp32 only")
    ap.add_argument("--batch-windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="the job's cores (torch threads for the network alone)")
    ap.add_argument("--reps", type=int, default=2, help="timed batches per network measurement (after a warm-up)")
    ap.add_argument("--json", help="write every figure here")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    sets = args.sets.split(",")
    clips = [p for pre in args.clips.split(",") for p in sorted(CLIPS.glob(f"{pre}*"))
             if p.suffix in (".avi", ".mp4", ".mkv")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "w").mkdir()
        weights = random_checkpoints(tmp / "w", set().union(*(FEATURE_SETS[s][1] for s in sets)))
        manifest = make_manifest(tmp, clips, args.repeat)
        results = []
        for s in sets:
            results.append(bench_set(s, manifest, weights, tmp, args, device))
            print(f"# {s} done", flush=True)
    text = report(results, args, device)
    print(text)
    out = {"args": vars(args), "device": str(device), "machine": platform.machine(), "torch": torch.__version__,
           "matrix_gflops_fp32_median": statistics.median(r["matrix_gflops_fp32"] for r in results),
           "results": results, "report": text}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
