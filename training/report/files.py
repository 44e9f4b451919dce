"""Every figure and page of ``snakemake --report`` (docs/report.md), one folder per report category:

    tables/   <table>.html                                       the results tables (summary, Table I, ablation)
    curves/   <dataset>/<feature set>/<model>/seed<k>.svg        per-epoch validation S, U, HM, ZSL and the loss
    confusion/<dataset>/<feature set>/<model>/seed<k>.svg        unseen test classes: GZSL and ZSL confusion
    maps/     <dataset>/<feature set>/<model>/seed<k>.svg        2-D map (t-SNE) of the test embeddings and class texts
    data/     <dataset>.<feature set>.html                       coverage and the media that could not be used
    runs/     <dataset>.<feature set>.html                       every run's numbers with its resolved configuration
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from avzsl.common import write_text_atomic
from training import run_dir as rd
from training.report import figures, pages
from training.report.records import Run, coverage_statements, read_data, read_run, read_summary_csv
from training.report.tables import build_table

log = logging.getLogger("avzsl.report")

FOLDERS = ("tables", "curves", "confusion", "maps", "data", "runs")


def write_report_files(test_jsons: Sequence[str | Path], tables: Mapping[str, Mapping], out_dir: str | Path,
                       data: Sequence[Mapping] = (), predictions: Sequence[str | Path] | None = None,
                       ) -> dict[str, int]:
    """Write every figure and page into the folders of ``out_dir`` (:data:`FOLDERS`).

    ``tables``: per results table, ``{"csv": path, "title", "models", "layout"}`` (its rows and how the workflow
    laid it out). ``data``: one ``{"dataset", "feature_set", "failed_media", "coverage"}`` per dataset and feature
    set (a ``failed_media.tsv`` and a ``coverage.tsv``; paths may be empty). ``predictions``: the runs' test
    predictions, each in its run directory (default: the run directory's file). Returns the number of files
    written per folder."""
    folders = {k: Path(out_dir) / k for k in FOLDERS}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(folders, 0)

    def put(kind: str, rel: str, text: str):
        write_text_atomic(folders[kind] / rel, text)
        counts[kind] += 1

    records = [read_data(d["dataset"], d["feature_set"], d.get("failed_media"), d.get("coverage")) for d in data]
    coverage = coverage_statements(records)
    for name, spec in tables.items():
        table = build_table(read_summary_csv(spec["csv"]), spec.get("title", name), spec.get("models"),
                            spec.get("layout", "by_type") != "flat", coverage)
        put("tables", f"{name}.html", pages.table_page(name, table))
    given = {str(Path(p).parent): p for p in predictions or ()}
    by_block: dict[tuple[str, str], list[Run]] = {}
    for p in test_jsons:
        run = read_run(p, given.get(str(Path(p).parent)))
        r = run.result
        by_block.setdefault((r.dataset, r.feature_set), []).append(run)
        rel = f"{r.dataset}/{r.feature_set}/{r.model}/seed{r.seed}.svg"
        name = f"{r.display_name} · {r.dataset} · {r.feature_set} · seed {r.seed}"
        if run.history is not None:
            put("curves", rel, figures.curves_svg(run.history, run.primary_mode, f"{name}: stage-1 validation",
                                                  r.best_epoch))
        if run.predictions is None:
            log.warning("%s: no test predictions (%s); no confusion matrix or map", run.path, rd.PREDICTIONS)
            continue
        pred = run.read_predictions()
        put("confusion", rel, figures.confusion_svg(pred, f"{name}: unseen test classes"))
        svg = figures.map_svg(pred, f"{name}: test embeddings")
        if svg is not None:
            put("maps", rel, svg)
    for (ds, fs), runs in sorted(by_block.items()):
        put("runs", f"{ds}.{fs}.html",
            pages.runs_page(ds, fs, sorted(runs, key=lambda x: (x.result.model, x.result.seed))))
    for d in records:
        put("data", f"{d.dataset}.{d.feature_set}.html", pages.data_page(d))
    return counts
