"""``avzsl``: every stage of the pipeline as a command, so each runs with or without Snakemake.

    avzsl demo-data       generate the offline demo dataset (videos, manifest, class names)
    avzsl scan-folder     manifest for a local folder of <class>/<video> files
    avzsl extract         per-window features for one shard of a manifest
    avzsl merge-features  join shard stores into one feature store
    avzsl build-splits    two-stage zero-shot splits from a manifest
    avzsl copy-splits     check an official split folder and write it in canonical form
    avzsl text            class text embeddings
    avzsl import-avca     features, splits or text from a released AVCA feature tree
    avzsl resolve         print a run's resolved hyper-parameters
    avzsl train           one training stage of one run
    avzsl evaluate        test a stage-2 model with the stage-1 calibration
    avzsl report          results/summary.csv and summary.md from test results
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _json_arg(text: str) -> dict:
    if not text:
        return {}
    p = Path(text)
    if not text.lstrip().startswith("{") and p.exists():
        text = p.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def cmd_demo_data(a):
    from extractors.sources.demo import DemoSpec, generate

    manifest = generate(a.out, DemoSpec.from_dict(a.spec), workers=a.workers, progress=not a.quiet)
    print(manifest)


def cmd_scan_folder(a):
    from extractors.sources.local import scan

    print(scan(a.root, a.out, a.descriptions))


def cmd_extract(a):
    from extractors.extract import ExtractOptions, extract_shard

    opts = ExtractOptions(decoder=a.decoder, workers=a.workers, batch_windows=a.batch_windows, device=a.device,
                          precision=a.precision, max_seconds=a.max_seconds, progress=not a.quiet)
    stats = extract_shard(a.manifest, a.shard, a.shards, a.backbone, a.params, a.out, opts)
    print(json.dumps(stats, indent=2))


def cmd_merge_features(a):
    from extractors.feature_store import FeatureStore, merge_stores

    n = merge_stores(a.shards, a.out)
    failures = FeatureStore(a.out).failures()
    logging.getLogger("avzsl").info("merged %d shards: %d videos, %d failed media", len(a.shards), n, len(failures))
    if a.failures:
        from extractors.io import atomic_path

        with atomic_path(a.failures, suffix=".tsv") as tmp:
            tmp.write_text("video_id\treason\n" + "".join(f"{v}\t{r}\n" for v, r in failures))


def cmd_build_splits(a):
    from extractors.sources.demo import read_factors
    from extractors.sources.manifest import read_manifest
    from training.data.splits import SplitRecipe, build_splits, write_splits

    rows = read_manifest(a.manifest)
    recipe = SplitRecipe(**a.recipe)
    factors = read_factors(a.class_names) if a.class_names and a.cover_factors else None
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows], recipe, factors)
    write_splits(a.out, splits)
    print(json.dumps({s: [len(splits.classes[s]), len(splits.videos[s])] for s in splits.classes}, indent=1))


def cmd_copy_splits(a):
    from training.data.splits import read_splits, write_splits

    write_splits(a.out, read_splits(a.src, a.all_class))


def cmd_text(a):
    from extractors.sources.manifest import read_class_names
    from extractors.text_encoders import encode
    from extractors.text_store import write_text_store
    from training.data.splits import read_splits

    classes = read_splits(a.splits).all_classes
    manual = read_class_names(a.class_names)
    missing = [c for c in classes if c not in manual]
    if missing:
        raise SystemExit(f"avzsl text: {a.class_names} has no text for classes {missing[:5]}")
    texts = [a.template.format(manual[c]) for c in classes]
    vectors = encode(texts, a.encoder, a.params)
    write_text_store(a.out, classes, texts, vectors, a.encoder, {**a.params, "template": a.template})


def cmd_import_avca(a):
    from training.data import released_avca as R

    if a.what == "features":
        out = R.import_features(a.root, a.dataset, a.feature_set, a.out, a.layout)
    elif a.what == "splits":
        R.import_splits(a.root, a.dataset, a.feature_set, a.out)
        out = {"splits": str(a.out)}
    else:
        out = R.import_text(a.root, a.dataset, a.feature_set, a.out, a.legacy_reference_order, a.npy, a.layout)
    print(json.dumps(out))


def cmd_resolve(a):
    from training.config import resolve_hparams

    print(json.dumps(resolve_hparams(a.model, a.profile, a.feature_set, a.overrides), indent=2))


def _run_config(a):
    from training.config import RunConfig, resolve_hparams

    if a.run_config:
        return RunConfig.from_dict(a.run_config)
    hp = resolve_hparams(a.model, a.profile, a.feature_set, a.overrides)
    return RunConfig.from_dict({"model": a.model, "seed": a.seed, "train": hp["train"], "model_params": hp["model"],
                                "dataset": a.dataset, "feature_set": a.feature_set, "profile": a.profile,
                                "features": a.features, "splits": a.splits, "text": a.text, "device": a.device})


def cmd_train(a):
    from extractors.io import write_json_atomic
    from training.engine import train_stage

    cfg = _run_config(a)
    selection = json.loads(Path(a.selection).read_text()) if a.selection else None
    result = train_stage(cfg, a.stage, a.run_dir, selection, progress=not a.quiet, mem_mb=a.mem_mb)
    if a.out and a.stage == 1:
        write_json_atomic(a.out, result)


def cmd_evaluate(a):
    from extractors.io import write_json_atomic
    from training.engine import evaluate_test

    cfg = _run_config(a)
    selection = json.loads(Path(a.selection).read_text())
    result = evaluate_test(cfg, a.model_path, selection)
    write_json_atomic(a.out, result)
    print(f"{result['display_name']} on {result['dataset']}/{result['feature_set']} (seed {result['seed']}): "
          f"S {result['S']:.2f}  U {result['U']:.2f}  HM {result['HM']:.2f}  ZSL {result['ZSL']:.2f}")


def cmd_report(a):
    from training.results import write_summary

    rows = write_summary(a.results, a.csv, a.md, a.title, a.order.split(",") if a.order else None, not a.flat)
    print(f"{len(rows)} result rows -> {a.csv}, {a.md}")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-config", type=_json_arg, default=None, help="resolved run configuration (JSON or file)")
    p.add_argument("--model", default="avca")
    p.add_argument("--profile", default="default", help="hyper-parameter profile, e.g. ucf, vggsound, demo")
    p.add_argument("--overrides", type=_json_arg, default={}, help='{"train": {...}, "model": {...}}')
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dataset", default="")
    p.add_argument("--feature-set", default="")
    p.add_argument("--features", help="feature store (.h5)")
    p.add_argument("--splits", help="split folder")
    p.add_argument("--text", help="text embedding store (.h5)")
    p.add_argument("--device", default="auto")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="avzsl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for tensor operations (0: torch's default); set to the job's share of cores")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the offline demo dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--spec", type=_json_arg, default={})
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("scan-folder", help="manifest for <root>/<class>/<video> files")
    p.add_argument("--root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--descriptions", type=_json_arg, default={})
    p.set_defaults(func=cmd_scan_folder)

    p = sub.add_parser("extract", help="features for one shard of a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--backbone", default="handcrafted")
    p.add_argument("--params", type=_json_arg, default={})
    p.add_argument("--out", required=True)
    p.add_argument("--decoder", default="pyav", choices=["pyav", "decord"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-windows", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--max-seconds", type=float, default=None)
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("merge-features", help="join shard stores")
    p.add_argument("--out", required=True)
    p.add_argument("--failures", help="also write failed media as TSV here")
    p.add_argument("shards", nargs="+")
    p.set_defaults(func=cmd_merge_features)

    p = sub.add_parser("build-splits", help="two-stage zero-shot splits from a manifest")
    p.add_argument("--manifest", required=True)
    p.add_argument("--class-names")
    p.add_argument("--cover-factors", action="store_true",
                   help="keep every class attribute of unseen classes covered by training classes")
    p.add_argument("--recipe", type=_json_arg, required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_build_splits)

    p = sub.add_parser("copy-splits", help="validate an official split folder and write it canonically")
    p.add_argument("--src", required=True)
    p.add_argument("--all-class")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_copy_splits)

    p = sub.add_parser("text", help="class text embeddings")
    p.add_argument("--splits", required=True, help="split folder (for the class list)")
    p.add_argument("--class-names", required=True, help="original,manual csv")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--params", type=_json_arg, default={})
    p.add_argument("--template", default="{}")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_text)

    p = sub.add_parser("import-avca", help="read a released AVCA (h5 means) or TCaF (pickled sequences) feature tree")
    p.add_argument("what", choices=["features", "splits", "text"])
    p.add_argument("--layout", default="avca", choices=["avca", "tcaf"])
    p.add_argument("--root", required=True)
    p.add_argument("--dataset", required=True, choices=["UCF", "ActivityNet", "VGGSound"])
    p.add_argument("--feature-set", required=True, choices=["main", "cls"])
    p.add_argument("--legacy-reference-order", action="store_true")
    p.add_argument("--npy", help="text embedding .npy (default: the tree's features/<set>/text/ file)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_import_avca)

    p = sub.add_parser("resolve", help="print resolved hyper-parameters")
    p.add_argument("--model", required=True)
    p.add_argument("--profile", default="default")
    p.add_argument("--feature-set", default="")
    p.add_argument("--overrides", type=_json_arg, default={})
    p.set_defaults(func=cmd_resolve)

    p = sub.add_parser("train", help="one training stage")
    _run_args(p)
    p.add_argument("--stage", type=int, choices=[1, 2], required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--selection", help="stage-1 selection.json (stage 2)")
    p.add_argument("--out", help="where stage 1 writes its selection")
    p.add_argument("--mem-mb", type=int, default=None,
                   help="the job's memory budget in MB: stop before training when the estimate exceeds it")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test a stage-2 model")
    _run_args(p)
    p.add_argument("--model-path", required=True)
    p.add_argument("--selection", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="summary table")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--title", default="Results")
    p.add_argument("--order", default="", help="comma-separated model order (rows top to bottom within a type)")
    p.add_argument("--flat", action="store_true", help="no grouping by type: rows exactly in --order")
    p.add_argument("results", nargs="+")
    p.set_defaults(func=cmd_report)
    return ap


def _limit_threads(n: int) -> None:
    """Several jobs share a machine: more compute threads than cores makes OpenMP spin and every job crawl."""
    import os

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.threads > 0:
        _limit_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        args.func(args)
    except (ValueError, OSError, KeyError) as e:
        # expected failures (bad input, a damaged or missing file, a budget that cannot fit): one line, no traceback
        message = " ".join(str(e).split()) or type(e).__name__
        raise SystemExit(f"avzsl {args.command}: error: {message}") from None


if __name__ == "__main__":
    main()
