"""The training commands of ``avzsl`` (:mod:`avzsl.app.cli` joins every package's commands): runs, tests and
tables. Each command is the function of its name (``-`` as ``_``), as in :mod:`extractors.cli`."""

from __future__ import annotations

import argparse
import json

from avzsl.common import json_arg

TITLE = "training and evaluation (training/): runs, tests and tables"


def resolve(a):
    from training.config import MODEL_CONFIG_DIR, available_models, load_model_config, resolve_hparams

    if a.model:
        print(json.dumps(resolve_hparams(a.model, a.profile, a.feature_set, a.overrides), indent=2))
        return
    print(f"model configurations in {MODEL_CONFIG_DIR}:")
    for model in available_models():
        profiles = sorted(load_model_config(model).get("profiles") or {})
        print(f"  {model:<20} profiles: default, {', '.join(profiles)}")


def _run_config(a):
    from training.config import RunConfig, assemble_run_config

    if a.run_config:
        return RunConfig.from_dict(a.run_config)
    return assemble_run_config(a.model, a.seed, a.dataset, a.feature_set, a.profile, a.features, a.splits, a.text,
                               a.device, a.overrides)


def train(a):
    from training.engine import train_stage
    from training.run_dir import Selection

    selection = Selection.read(a.selection) if a.selection else None
    result = train_stage(_run_config(a), a.stage, a.run_dir, selection, progress=not a.quiet, mem_mb=a.mem_mb,
                         model_out=a.model_out)
    if a.out and a.stage == 1:
        Selection.from_dict(result).write(a.out)


def evaluate(a):
    from training.engine import evaluate_test
    from training.run_dir import Selection, TestResult

    result = TestResult.from_dict(evaluate_test(_run_config(a), a.model_path, Selection.read(a.selection),
                                                predictions_out=a.predictions))
    result.write(a.out)
    print(f"{result.display_name} on {result.dataset}/{result.feature_set} (seed {result.seed}): "
          f"S {result.S:.2f}  U {result.U:.2f}  HM {result.HM:.2f}  ZSL {result.ZSL:.2f}")


def summary(a):
    from extractors.sources.download import coverage_statement, read_coverage
    from training.report.tables import write_summary

    if len(a.coverage) != len(a.coverage_datasets):
        raise SystemExit(f"--coverage gives {len(a.coverage)} file(s) but --coverage-datasets names "
                         f"{len(a.coverage_datasets)} dataset(s); give one dataset per file")
    coverage = {name: coverage_statement(read_coverage(path))
                for name, path in zip(a.coverage_datasets, a.coverage)}
    rows = write_summary(a.results, a.csv, a.md, a.title, a.order.split(",") if a.order else None, not a.flat,
                         coverage)
    print(f"{len(rows)} result rows -> {a.csv}, {a.md}")


def report_files(a):
    from training.report.files import write_report_files

    data = [{"dataset": k.split("/")[0], "feature_set": k.split("/", 1)[-1], **v} for k, v in a.data.items()]
    counts = write_report_files(a.results, a.tables, a.out_dir, data, a.predictions)
    print(f"{a.out_dir}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-config", type=json_arg, default=None, help="resolved run configuration (JSON or file)")
    p.add_argument("--model", default="avca")
    p.add_argument("--profile", default="default", help="hyper-parameter profile, e.g. ucf, vggsound, demo")
    p.add_argument("--overrides", type=json_arg, default={}, help='{"train": {...}, "model": {...}}')
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dataset", default="")
    p.add_argument("--feature-set", default="")
    p.add_argument("--features", help="feature store (.h5)")
    p.add_argument("--splits", help="split folder")
    p.add_argument("--text", help="text embedding store (.h5)")
    p.add_argument("--device", default="auto")


def add_commands(sub: argparse._SubParsersAction) -> list[str]:
    """Register the training commands; returns their names (for the grouped help)."""
    before = set(sub.choices)
    p = sub.add_parser("resolve", help="print a model's resolved hyper-parameters (no --model: list every model)")
    p.add_argument("--model")
    p.add_argument("--profile", default="default")
    p.add_argument("--feature-set", default="")
    p.add_argument("--overrides", type=json_arg, default={})
    p.set_defaults(func=resolve)

    p = sub.add_parser("train", help="one training stage")
    _run_args(p)
    p.add_argument("--stage", type=int, choices=[1, 2], required=True)
    p.add_argument("--run-dir", required=True, help="the stage's folder (config, log, checkpoint)")
    p.add_argument("--selection", help="stage-1 selection (stage 2)")
    p.add_argument("--out", help="where stage 1 writes its selection")
    p.add_argument("--model-out", help="where stage 2 writes its weights (default: model.pt in --run-dir)")
    p.add_argument("--mem-mb", type=int, default=None,
                   help="the job's memory budget in MB: stop before training when the estimate exceeds it")
    p.set_defaults(func=train)

    p = sub.add_parser("evaluate", help="test a stage-2 model")
    _run_args(p)
    p.add_argument("--model-path", required=True)
    p.add_argument("--selection", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--predictions", help="where to write the per-video test predictions (.npz)")
    p.set_defaults(func=evaluate)

    p = sub.add_parser("summary", help="a results table (csv and markdown) from test results")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--title", default="Results")
    p.add_argument("--order", default="", help="comma-separated model order (rows top to bottom within a type)")
    p.add_argument("--flat", action="store_true", help="no grouping by type: rows exactly in --order")
    p.add_argument("--coverage", nargs="*", default=[], metavar="TSV",
                   help="datasets' coverage.tsv files: the table states the share of listed videos it was computed on")
    p.add_argument("--coverage-datasets", nargs="*", default=[], metavar="DATASET",
                   help="the dataset of each --coverage file, in the same order")
    p.add_argument("results", nargs="+")
    p.set_defaults(func=summary)

    p = sub.add_parser("report-files", help="the figures and pages of snakemake --report (training/report/)")
    p.add_argument("--out-dir", required=True, help="gets tables/, curves/, confusion/, maps/, data/, runs/")
    p.add_argument("--tables", type=json_arg, default={},
                   help='{"<table>": {"csv": path, "title": ..., "models": [...], "layout": "by_type" or "flat"}, ...}'
                        " (JSON or file): the results tables to include, laid out as their markdown")
    p.add_argument("--data", type=json_arg, default={},
                   help='{"<dataset>/<feature set>": {"failed_media": path, "coverage": path}, ...} (JSON or file; '
                        "coverage: the dataset's coverage.tsv)")
    p.add_argument("--predictions", nargs="*", default=None,
                   help="the runs' test predictions (default: test_predictions.npz beside each test.json)")
    p.add_argument("results", nargs="*", help="test.json of every run")
    p.set_defaults(func=report_files)
    return [name for name in sub.choices if name not in before]
