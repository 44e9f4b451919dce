"""The whole UCF benchmark's time, estimated from the figures bench/gpu_check.sh measured on this machine.

Extraction: UCF101's 13,320 videos (27 h, 7.3 s each on average) per feature set, at the best whole-extraction
rate of ``extract_*.json`` (windows per second, turned into video-seconds per second with that run's windows per
video-second), in ``--shards`` jobs side by side sharing the machine (so the rate is the machine's, not one job's).
Training: for every model, stage 1 and stage 2 each run the UCF profile's epochs of ``n_batches`` batches
(``training.config.resolve_hparams``; no early stop assumed: an upper bound), at the measured seconds per 500
batches plus one validation pass (``train.jsonl``, from ``bench.train_throughput``), for the ``--seeds`` seeds, one
job at a time. Writes ``ucf_estimate.json`` and ``ucf_estimate.md`` into the folder.

    python -m bench.gpu_estimate bench/results/gpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

UCF_VIDEOS = 13320
UCF_MEAN_SECONDS = 7.3
FEATURE_SETS = {"main": "selavi", "cls": "c3d_vggish"}


def extraction_rates(folder: Path) -> dict[str, dict]:
    """Per bench feature set: the best whole-extraction rate over the runs (video-seconds per second) and the run."""
    best: dict[str, dict] = {}
    for path in sorted(folder.glob("extract_*.json")):
        data = json.loads(path.read_text())
        for key, r in zip(data["args"]["sets"].split(","), data["results"]):
            windows = sum(r["windows"].values())
            rate = r["rates"]["whole_now_windows_s"] * r["video_seconds"] / windows
            if rate > best.get(key, {}).get("video_s_per_s", 0):
                best[key] = {"video_s_per_s": rate, "run": path.name, "batch_windows": data["args"]["batch_windows"],
                             "precision": data["args"]["precision"]}
    return best


def training_seconds(folder: Path) -> dict[str, float]:
    """Per model: seconds of both stages' training at the UCF profile's epochs and batches."""
    from training.config import resolve_hparams

    out = {}
    path = folder / "train.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        hp = resolve_hparams(r["model"], "ucf", "main")["train"]
        per_epoch = r["train_s_per_500_batches"] * hp["n_batches"] / 500 + r["validation_s"]
        out[r["model"]] = 2 * hp["epochs"] * per_epoch
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    rates = extraction_rates(folder)
    extract = {fs: UCF_VIDEOS * UCF_MEAN_SECONDS / rates[key]["video_s_per_s"]
               for fs, key in FEATURE_SETS.items() if key in rates}
    train = training_seconds(folder)
    total = sum(extract.values()) + args.seeds * sum(train.values()) * len(extract or {"main": 0})
    out = {"extraction_rates": rates, "extraction_s": extract, "training_s_per_feature_set_and_seed": train,
           "seeds": args.seeds, "total_s": total, "total_h": total / 3600}
    (folder / "ucf_estimate.json").write_text(json.dumps(out, indent=1))
    lines = ["| part | hours |", "|---|---|"]
    lines += [f"| extraction, {fs} ({rates[FEATURE_SETS[fs]]['run']}) | {s / 3600:.2f} |" for fs, s in extract.items()]
    lines += [f"| training {m}, both stages, per feature set and seed | {s / 3600:.2f} |" for m, s in train.items()]
    lines.append(f"| **whole UCF benchmark** ({len(extract)} feature set(s), {args.seeds} seed(s)) | "
                 f"**{total / 3600:.2f}** |")
    (folder / "ucf_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
