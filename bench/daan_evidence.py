"""Evidence for DAAN's Table II and its open readings: every variant and reading, several seeds, mean ± std, and
whether each difference from the reference exceeds the seed noise; then the named comparisons (COMPARISONS: each
component against the variant without it, DAAN against the learning-rate control) with Welch's t and p.

Runs on the synthetic benchmark (bench/synthetic_features.py, docs/synthetic-benchmark.md) with each model's
dataset profile (UCF by default, i.e. the paper's widths), ``--steps`` training batches, and scores stage-1
validation S, U, HM and ZSL. A difference counts as beyond the seed noise when Welch's t statistic over the seeds
exceeds ``--t`` (2.0 by default, about p < 0.1 two-sided at 5 seeds each); the markdown table marks those rows.

    python -m bench.daan_evidence --seeds 3 --data data/synthetic-ucf --out bench/out/daan_evidence.md  # 500 steps
    python -m bench.daan_evidence --seeds 2 --steps 5 --eval-every 0 --scale 0.1 --variants base,daan  # a smoke run
    python -m bench.daan_evidence --generator sequence --steps 500 --eval-every 100 --seeds 3 \
        --variants base,qdma,qdma_csgm_vc,daan --data data/sequence-ucf   # validation curves, the second benchmark

``--generator`` picks the benchmark (bench/synthetic_features.py or bench/sequence_features.py); ``--eval-every``
also scores validation along the way (each run's ``curve``, with the interval's training statistics, among them
CSGM's η per QDMA part); ``--qdma-lr-scale`` sets the factor of the control variant ``qdma.lr_scaled``.

The Snakemake target ``daan_evidence`` (workflow/rules/evidence.smk) runs the same thing one job per variant and
seed through the commands ``avzsl evidence-benchmark``, ``evidence-run`` and ``evidence-table`` (:mod:`bench.cli`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from bench.synthetic_eval import GENERATORS, benchmark_paths, evaluate_model
from bench.synthetic_features import dataset_name

METRICS = ("S", "U", "HM", "ZSL")
# name -> (model, model overrides): Table II top to bottom, then one row per open reading (docs/models/daan.md)
VARIANTS = {
    "base": ("daan_base", {}),
    "qdma": ("daan_qdma", {}),
    "qdma_csgm_vc": ("daan_qdma_csgm_vc", {}),
    "daan": ("daan", {}),
    "daan.qdma_cross": ("daan", {"qdma_attention": "cross"}),
    "daan.w_is_attention_weight": ("daan", {"w_owner": "attention"}),
    "daan.w_0": ("daan", {"diff_weight": 0.0}),
    "daan.normalise_modality": ("daan", {"csgm_normalise": "modality"}),
    "daan.replace_gradient": ("daan", {"csgm_update": "replace_gradient"}),
    "daan.no_noise": ("daan", {"noise": 0.0}),
    # the control of issue 28: CSGM as a constant step factor, QDMA's parts trained at a scaled learning rate (the
    # factor: --qdma-lr-scale, e.g. the mean η of the DAAN runs; γ by default, where η collapses to)
    "qdma.lr_scaled": ("daan_qdma", {"qdma_lr_scale": 0.45}),
}
LR_CONTROL = "qdma.lr_scaled"
REFERENCE = "base"
# the questions the evidence answers, as (variant, compared with, what the difference measures)
COMPARISONS = (
    ("qdma", "base", "QDMA"),
    ("qdma_csgm_vc", "qdma", "CSGM on V_c"),
    ("daan", "qdma_csgm_vc", "CSGM on V_c and V_t"),
    ("daan", "qdma", "CSGM (both parts)"),
    ("daan", LR_CONTROL, "CSGM beyond a constant step factor (the control)"),
    ("daan.no_noise", LR_CONTROL, "CSGM without its noise beyond a constant step factor"),
    (LR_CONTROL, "qdma", "QDMA's learning rate scaled"),
    ("daan", "daan.no_noise", "the noise"),
)


def _welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """Welch's t of mean(a) − mean(b) and its two-sided p. A single seed counts as no spread (p is then nan: no
    degrees of freedom); when neither side varies, t is 0 and p 1 if the means agree, else ±inf and 0."""
    sd = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in (a, b)]
    diff = statistics.mean(a) - statistics.mean(b)
    if sd == [0.0, 0.0]:
        p = math.nan if min(len(a), len(b)) < 2 else float(diff == 0)
        return (0.0, p) if diff == 0 else (math.copysign(math.inf, diff), p)
    with np.errstate(divide="ignore", invalid="ignore"):  # a single seed: no degrees of freedom, still a statistic
        res = stats.ttest_ind_from_stats(statistics.mean(a), sd[0], len(a), statistics.mean(b), sd[1], len(b),
                                         equal_var=False)
    return float(res.statistic), float(res.pvalue) if min(len(a), len(b)) > 1 else math.nan


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic of mean(a) − mean(b), a single seed counting as no spread; 0 when neither varies and the
    means agree (±inf when they differ)."""
    return _welch(a, b)[0]


def summarise(runs: dict[str, list[dict]], reference: str = REFERENCE, t_threshold: float = 2.0) -> list[dict]:
    """Mean, std and the t statistic against the reference for every variant and metric."""
    rows = []
    for name, results in runs.items():
        row = {"variant": name, "seeds": len(results)}
        for m in METRICS:
            values = [r[m] for r in results]
            row[m] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
            # one seed has no spread to compare with: no t, no mark
            if name != reference and reference in runs and min(len(values), len(runs[reference])) > 1:
                t = welch_t(values, [r[m] for r in runs[reference]])
                row[f"t_{m}"] = t
                row[f"beyond_noise_{m}"] = abs(t) > t_threshold
        for key, stat in (("eta_spread", "eta_std."), ("eta_mean", "eta_mean."), ("eta_floor", "eta_floor.")):
            row[key] = statistics.mean(
                [statistics.mean([v for k, v in r.get("stats", {}).items() if k.startswith(stat)] or [0.0])
                 for r in results])
        rows.append(row)
    return rows


BEST_HM = "best HM"


def _best_point(run: dict) -> dict:
    """The point of a run's curve with the highest HM (what the protocol's best-epoch selection keeps)."""
    return max(run["curve"], key=lambda p: p["HM"])


def _value(run: dict, column: str) -> float:
    """A run's end-point metric, or for BEST_HM the highest HM along its curve."""
    return _best_point(run)["HM"] if column == BEST_HM else run[column]


def compare(runs: dict[str, list[dict]], t_threshold: float = 2.0) -> list[dict]:
    """Each of COMPARISONS whose two variants both ran with at least two seeds: per metric (and the best HM along
    the curve, where every run has one) the difference of the means, Welch's t and its two-sided p, and whether |t|
    exceeds the threshold."""
    rows = []
    for a, b, meaning in COMPARISONS:
        if min(len(runs.get(a, [])), len(runs.get(b, []))) < 2:
            continue
        row = {"variant": a, "against": b, "meaning": meaning}
        curved = all(r.get("curve") for r in runs[a] + runs[b])
        for m in METRICS + ((BEST_HM,) if curved else ()):
            va, vb = [_value(r, m) for r in runs[a]], [_value(r, m) for r in runs[b]]
            t, p = _welch(va, vb)
            row[m] = {"diff": statistics.mean(va) - statistics.mean(vb), "t": t, "p": p,
                      "beyond_noise": abs(t) > t_threshold}
        rows.append(row)
    return rows


def comparison_table(rows: list[dict], t_threshold: float) -> list[str]:
    if not rows:
        return []
    columns = METRICS + ((BEST_HM,) if all(BEST_HM in r for r in rows) else ())
    lines = ["## Differences that answer the questions", "",
             f"Difference of the means (percentage points), Welch's t and two-sided p over the seeds; ✱: |t| > "
             f"{t_threshold}. With 3 seeds a side, p < 0.05 needs |t| of about 2.8 to 4.3. {BEST_HM}: the highest "
             "HM along each run's curve.", "",
             "| variant | against | measures | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for r in rows:
        cells = [f"{r[m]['diff']:+.2f} (t {r[m]['t']:+.1f}, p {r[m]['p']:.2f})" + (" ✱" if r[m]["beyond_noise"] else "")
                 for m in columns]
        lines.append(f"| {r['variant']} | {r['against']} | {r['meaning']} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(rows: list[dict], meta: dict, runs: dict[str, list[dict]] | None = None) -> str:
    generator = meta.get("generator", "synthetic")
    lines = [f"# DAAN evidence: {meta['dataset']} {generator} benchmark, {meta['steps']} steps, {meta['seeds']} seeds",
             "", "Stage-1 validation, percent, mean ± std over seeds. ✱: differs from "
             f"`{REFERENCE}` beyond the seed noise (|Welch t| > {meta['t']}) in that metric. "
             "η spread: the mean batch standard deviation of CSGM's η (0 without CSGM); η mean and at γ: its mean "
             "and the share of samples at the floor γ, over every part and step.", "",
             "| variant | " + " | ".join(METRICS) + " | η spread | η mean | at γ |",
             "|---|" + "---|" * (len(METRICS) + 3)]
    for r in rows:
        cells = [f"{r[m][0]:.2f} ± {r[m][1]:.2f}" + (" ✱" if r.get(f"beyond_noise_{m}") else "") for m in METRICS]
        eta = [f"{r['eta_mean']:.3f}", f"{r['eta_floor']:.2f}"] if r.get("eta_mean") else ["–", "–"]
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['eta_spread']:.3f} | " + " | ".join(eta)
                     + " |")
    lines += ["", f"Chance: {meta['chance_gzsl']:.2f} (S, U), {meta['chance_zsl']:.2f} (ZSL).", ""]
    if runs and LR_CONTROL in runs:
        factors = sorted({r["override"]["model"]["qdma_lr_scale"] for r in runs[LR_CONTROL]})
        lines += [f"`{LR_CONTROL}`: Base + QDMA with the learning rate of QDMA's parts scaled by "
                  + ", ".join(f"{f:g}" for f in factors) + ".", ""]
    if runs:
        lines += comparison_table(compare(runs, meta["t"]), meta["t"])
        lines += curve_tables(runs)
    return "\n".join(lines)


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def curve_tables(runs: dict[str, list[dict]]) -> list[str]:
    """Markdown for runs with validation curves (``eval_every``): each metric at every evaluation, and CSGM's η per
    part over training (mean, batch spread, share at γ, the step factor the part received)."""
    curved = {n: rs for n, rs in runs.items() if all(r.get("curve") for r in rs)}
    if not curved:
        return []
    steps = [p["step"] for p in next(iter(curved.values()))[0]["curve"]]
    curved = {n: rs for n, rs in curved.items() if all([p["step"] for p in r["curve"]] == steps for r in rs)}
    lines = []
    for metric in METRICS:
        lines += [f"## Validation {metric} over training (mean ± std over seeds)", "",
                  "| variant | " + " | ".join(f"step {s}" for s in steps) + " |", "|---|" + "---|" * len(steps)]
        for name, rs in curved.items():
            cells = [_mean_std([r["curve"][i][metric] for r in rs]) for i in range(len(steps))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Best validation HM along the curve", "",
              "The highest HM of each run's curve, and the step it was reached at, against the final HM.", "",
              "| variant | best HM | at step | final HM |", "|---|---|---|---|"]
    for name, rs in curved.items():
        best = [_best_point(r) for r in rs]
        lines.append(f"| {name} | {_mean_std([p['HM'] for p in best])} | "
                     + ", ".join(str(p["step"]) for p in best) + f" | {_mean_std([r['HM'] for r in rs])} |")
    lines += ["", "## CSGM over training", "",
              "Per part, for each interval between evaluations: η's mean, its batch standard deviation, the share "
              "of samples at the floor γ and the factor the part's step was scaled by (η̄ under `scale_step`, 1 "
              "under `replace_gradient`), each averaged over the interval's batches and the seeds.", "",
              "| variant | part | " + " | ".join(f"step {s}" for s in steps) + " |",
              "|---|---|" + "---|" * len(steps)]
    for name, rs in curved.items():
        parts = sorted(k.split(".", 1)[1] for k in rs[0]["curve"][0]["stats"] if k.startswith("eta_mean."))
        for part in parts:
            cells = []
            for i in range(len(steps)):
                figure = {k: statistics.mean(r["curve"][i]["stats"].get(f"{k}.{part}", 0.0) for r in rs)
                          for k in ("eta_mean", "eta_std", "eta_floor", "step_scale")}
                cells.append("{eta_mean:.3f} / {eta_std:.3f} / {eta_floor:.2f} / {step_scale:.3f}".format(**figure))
            lines.append(f"| {name} | {part} | " + " | ".join(cells) + " |")
    lines += ["", "(η mean / η spread / at γ / step factor)", ""]
    return lines


def _write_atomic(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.partial"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


def _table(runs: dict[str, list[dict]], dataset: str, steps: int, t: float, generator: str) -> str:
    first = next(iter(runs.values()))[0]
    seeds = min(len(r) for r in runs.values())
    return markdown(summarise(runs, t_threshold=t),
                    {"dataset": dataset, "generator": generator, "steps": steps, "seeds": seeds, "t": t,
                     "chance_gzsl": first["chance_gzsl"], "chance_zsl": first["chance_zsl"]}, runs)


def unknown_variants(names: list[str]) -> list[str]:
    return [n for n in names if n not in VARIANTS]


def read_runs(paths: list[str]) -> dict[str, list[dict]]:
    """The runs of ``--json-out`` files by variant (in VARIANTS order, then any other), each sorted by seed."""
    runs: dict[str, list[dict]] = {}
    for path in paths:
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            try:
                r = json.loads(line)
                runs.setdefault(r["variant"], []).append(r)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {number}: not a run of evidence-run ({type(e).__name__}: {e}); "
                                 "delete the file and rerun the evidence_run job that writes it") from None
    order = [n for n in VARIANTS if n in runs] + [n for n in runs if n not in VARIANTS]
    return {n: sorted(runs[n], key=lambda r: r["seed"]) for n in order}


def write_table(runs: dict[str, list[dict]], dataset: str, steps: int, t: float, out: str | None,
                generator: str = "synthetic") -> str:
    text = _table(runs, dataset_name(dataset), steps, t, generator)
    if out:
        _write_atomic(out, text)
    return text


def prepare_benchmark(folder: str | Path, dataset: str, scale: float, generator: str = "synthetic") -> dict:
    """The synthetic benchmark every variant and seed trains on (one benchmark: the seeds vary the training)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return benchmark_paths(Path(folder), dataset_name(dataset), 0, scale, generator)


def variant_overrides(name: str, qdma_lr_scale: float | None = None) -> tuple[str, dict]:
    """The model and its overrides for a variant; ``qdma_lr_scale`` replaces the control variant's factor."""
    model, overrides = VARIANTS[name]
    if name == LR_CONTROL and qdma_lr_scale is not None:
        overrides = {**overrides, "qdma_lr_scale": qdma_lr_scale}
    return model, overrides


def run_variants(paths: dict, dataset: str, names: list[str], first_seed: int, seeds: int, steps: int,
                 batch_size: int, device: str, json_out: str | None = None, eval_every: int = 0,
                 qdma_lr_scale: float | None = None) -> dict[str, list[dict]]:
    """Train and score every variant with each seed; each result is printed as a JSON line (and kept in
    ``json_out``). ``eval_every``: also score validation every that many steps (the run's ``curve``)."""
    if unknown_variants(names):
        raise ValueError(f"unknown variant(s) {unknown_variants(names)}; known: {', '.join(VARIANTS)}")
    runs = {n: [] for n in names}
    lines = []
    for seed in range(first_seed, first_seed + seeds):
        for name in names:
            model, overrides = variant_overrides(name, qdma_lr_scale)
            result = evaluate_model(model, paths, dataset_name(dataset), steps, batch_size or None, seed, device,
                                    {"model": overrides} if overrides else None, eval_every)
            runs[name].append(result)
            lines.append(json.dumps({"variant": name, "seed": seed, **result}))
            print(lines[-1], flush=True)
    if json_out:
        _write_atomic(json_out, "\n".join(lines) + "\n")
    return runs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="training seeds first-seed .. first-seed + seeds - 1")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=256, help="0: each model's own setting")
    ap.add_argument("--dataset", default="UCF")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", help="benchmark folder to reuse")
    ap.add_argument("--generator", default="synthetic", choices=list(GENERATORS), help="which synthetic benchmark")
    ap.add_argument("--eval-every", type=int, default=100,
                    help="also score validation every N steps (0: at the end)")
    ap.add_argument("--qdma-lr-scale", type=float, help=f"{LR_CONTROL}'s factor (default: its VARIANTS entry)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t", type=float, default=2.0, help="|Welch t| beyond which a difference counts")
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--prepare", action="store_true", help="only write the benchmark into --data")
    ap.add_argument("--json-out", help="write this invocation's runs here (JSON lines)")
    ap.add_argument("--from-runs", nargs="+", metavar="JSONL", help="no training: the table from --json-out files")
    args = ap.parse_args(argv)
    if args.from_runs:
        print(write_table(read_runs(args.from_runs), args.dataset, args.steps, args.t, args.out, args.generator))
        return
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    if unknown_variants(names):
        raise SystemExit(f"unknown variant(s) {unknown_variants(names)}; known: {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_benchmark(args.data or tmp, args.dataset, args.scale, args.generator)
        if args.prepare:
            return
        runs = run_variants(paths, args.dataset, names, args.first_seed, args.seeds, args.steps, args.batch_size,
                            args.device, args.json_out, args.eval_every, args.qdma_lr_scale)
    print(write_table(runs, args.dataset, args.steps, args.t, args.out, args.generator))


if __name__ == "__main__":
    main()
