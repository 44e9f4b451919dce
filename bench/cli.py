"""The evidence commands of ``avzsl`` (:mod:`avzsl.app.cli` joins every package's commands): DAAN's Table II variants
and open readings on the synthetic benchmark, one job per variant and seed (:mod:`bench.daan_evidence`). Each
command is the function of its name (``-`` as ``_``) and runs the rule of that name."""

from __future__ import annotations

import argparse

TITLE = "evidence (bench/): DAAN's variants over seeds on the synthetic benchmark"


def evidence_benchmark(a):
    from bench.daan_evidence import prepare_benchmark

    prepare_benchmark(a.data, a.dataset, a.scale, a.generator)


def evidence_run(a):
    from bench.daan_evidence import VARIANTS, prepare_benchmark, run_variants, unknown_variants

    names = a.variants.split(",")
    if unknown_variants(names):  # before the benchmark is written
        raise ValueError(f"unknown variant(s) {unknown_variants(names)}; known: {', '.join(VARIANTS)}")
    paths = prepare_benchmark(a.data, a.dataset, a.scale, a.generator)
    run_variants(paths, a.dataset, names, a.first_seed, a.seeds, a.steps, a.batch_size, a.device,
                 a.json_out, a.eval_every, a.qdma_lr_scale)


def evidence_table(a):
    from bench.daan_evidence import read_runs, write_table

    print(write_table(read_runs(a.runs), a.dataset, a.steps, a.t, a.out, a.generator))


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="UCF", help="whose official split sizes the benchmark has")
    p.add_argument("--scale", type=float, default=1.0, help="share of those sizes")
    p.add_argument("--generator", default="synthetic", choices=["synthetic", "sequence"],
                   help="bench/synthetic_features.py or bench/sequence_features.py (docs/synthetic-benchmark.md)")


def add_commands(sub: argparse._SubParsersAction) -> list[str]:
    """Register the evidence commands; returns their names (for the grouped help)."""
    before = set(sub.choices)
    p = sub.add_parser("evidence-benchmark", help="write the synthetic benchmark the evidence runs train on")
    p.add_argument("--data", required=True, help="benchmark folder to write")
    _benchmark_args(p)
    p.set_defaults(func=evidence_benchmark)

    p = sub.add_parser("evidence-run", help="train and score DAAN variants with some seeds (JSON lines)")
    p.add_argument("--data", required=True, help="the benchmark folder (written by evidence-benchmark)")
    _benchmark_args(p)
    p.add_argument("--variants", required=True, help="comma-separated names of bench.daan_evidence.VARIANTS")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="training seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--steps", type=int, default=500, help="training batches")
    p.add_argument("--batch-size", type=int, default=256, help="0: each model's own setting")
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-every", type=int, default=100, help="also score validation every N steps (0: at the end)")
    p.add_argument("--qdma-lr-scale", type=float, help="the factor of the qdma.lr_scaled variant (default 0.45)")
    p.add_argument("--json-out", required=True, help="the runs, one JSON line each")
    p.set_defaults(func=evidence_run)

    p = sub.add_parser("evidence-table", help="the evidence table (mean ± std, beyond the seed noise) from runs")
    p.add_argument("runs", nargs="+", help="JSON-lines files of evidence-run")
    p.add_argument("--dataset", default="UCF")
    p.add_argument("--generator", default="synthetic", help="the benchmark the runs trained on (for the title)")
    p.add_argument("--steps", type=int, default=500, help="as the runs were trained (for the title)")
    p.add_argument("--t", type=float, default=2.0, help="|Welch t| beyond which a difference counts")
    p.add_argument("--out", required=True, help="markdown table to write")
    p.set_defaults(func=evidence_table)
    return [name for name in sub.choices if name not in before]
