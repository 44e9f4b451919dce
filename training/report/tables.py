"""The results tables: ``results/<table>.csv`` and ``.md`` from the runs' records (:mod:`training.report.records`).

The markdown lays the numbers out like Table I of the DAAN paper: model rows grouped by type, a block of
S / U / HM / ZSL columns per dataset; with several seeds a cell reads ``mean ± std`` and a per-seed table follows.
:func:`build_table` gives that layout as a :class:`ResultsTable`, which the markdown here and the report's HTML
page (:mod:`training.report.pages`) both render.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from avzsl.common import atomic_path, code_version
from training.report.records import METRICS, ONE_STEP, SummaryRow, summary_rows, write_summary_csv

# row-group order of the table; families not listed follow alphabetically
FAMILY_ORDER = ("ZSL", "Audio-visual", "Ablation")
ONE_STEP_NOTE = ("† a temporal model run on per-video mean features (each mean read as a one-step sequence): the "
                 "feature store has no per-step features (e.g. AVCA's released h5 files; use the TCaF pickle layout "
                 "or extracted features for per-step inputs).")
COVERAGE_LEAD = "The numbers were computed on the videos that could be obtained:"


@dataclass
class Grid:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class ResultsTable:
    """A results table's content, in reading order. Prose may hold inline code in backticks."""

    title: str
    lead: str  # what the numbers are
    grid: Grid
    notes: list[str]
    per_seed: Grid | None  # with several seeds: every run's numbers
    coverage: dict[str, str]  # per dataset: on how much of the listed videos the numbers were computed
    closing: str  # code version and where each run's configuration is


def order_rows(rows: Sequence[SummaryRow], order: Sequence[str] | None = None) -> list[SummaryRow]:
    """Dataset, feature set and type, then the models in ``order`` (else alphabetically), then seed."""
    rows = sorted(rows, key=lambda r: (r.dataset, r.feature_set, family_key(r.family), r.model, r.seed))
    if order:
        rank = {m: i for i, m in enumerate(order)}
        rows.sort(key=lambda r: (r.dataset, r.feature_set, family_key(r.family), rank.get(r.model, len(rank)),
                                 r.seed))
    return rows


def build_table(rows: Sequence[SummaryRow], title: str = "Results", order: Sequence[str] | None = None,
                by_type: bool = True, coverage: Mapping[str, str] | None = None) -> ResultsTable:
    """Table-I layout: rows grouped by type (``by_type``), in ``order`` within a group (else alphabetically); with
    ``by_type=False`` a plain list in ``order`` (e.g. the ablation rows of Table II). ``coverage``: per dataset, a
    sentence saying on how much of the listed (official) videos the numbers were computed."""
    rows = order_rows(rows, order)
    blocks = sorted({(r.dataset, r.feature_set) for r in rows})
    rank = {m: i for i, m in enumerate(order or [])}

    def key(m):
        within = (rank.get(m[1], len(rank)), m[1])
        return ((family_key(m[0]),) if by_type else ()) + within
    models = sorted({(r.family, r.model, r.display_name) for r in rows}, key=key)
    cells = defaultdict(list)
    for r in rows:
        cells[(r.model, r.dataset, r.feature_set)].append(r)
    seeds = sorted({r.seed for r in rows})
    lead = ("Mean class accuracy in percent on the test split (two-stage protocol, calibrated stacking β chosen on "
            "validation). " + (f"Mean ± std over seeds {', '.join(map(str, seeds))}." if len(seeds) > 1
                               else f"Seed {seeds[0]}." if seeds else ""))
    grid = Grid((["Type", "Model"] if by_type else ["Model"])
                + [f"{d} · {fs} {m}" if i == 0 else m for d, fs in blocks for i, m in enumerate(METRICS)])
    last_family = None
    for family, model, display in models:
        line = [family if family != last_family else "", display] if by_type else [display]
        last_family = family
        for d, fs in blocks:
            runs = cells.get((model, d, fs), [])
            mark = " †" if any(r.inputs == ONE_STEP for r in runs) else ""
            line += [_cell([r.metric(m) for r in runs]) + mark for m in METRICS]
        grid.rows.append(line)
    per_seed = None
    if len(seeds) > 1:
        per_seed = Grid(["Dataset", "Features", "Model", "Seed", *METRICS, "β", "epoch"],
                        [[r.dataset, r.feature_set, r.display_name, str(r.seed),
                          *(f"{r.metric(m):.2f}" for m in METRICS), f"{r.beta:.2f}", str(r.best_epoch)]
                         for r in rows])
    versions = sorted({r.code_version for r in rows})
    closing = (f"Code version: {', '.join(versions) or code_version()}. Each run's resolved configuration, seed and "
               "git SHA are in its run directory (`config.yaml`, `test.json`).")
    notes = [ONE_STEP_NOTE] if any(r.inputs == ONE_STEP for r in rows) else []
    return ResultsTable(title, lead, grid, notes, per_seed, dict(sorted((coverage or {}).items())), closing)


def render_markdown(table: ResultsTable) -> str:
    lines = [f"# {table.title}", "", table.lead, "", *_grid_markdown(table.grid)]
    for note in table.notes:
        lines += ["", note]
    if table.per_seed:
        lines += ["", "## Per seed", "", *_grid_markdown(table.per_seed)]
    if table.coverage:
        lines += ["", "## Coverage", "", COVERAGE_LEAD, ""]
        lines += [f"- {name}: {text}" for name, text in table.coverage.items()]
    lines += ["", table.closing, ""]
    return "\n".join(lines)


def write_summary(test_jsons: Sequence[str | Path], csv_path: str | Path, md_path: str | Path,
                  title: str = "Results", order: Sequence[str] | None = None, by_type: bool = True,
                  coverage: Mapping[str, str] | None = None) -> list[SummaryRow]:
    """A results table of the given runs: the csv (one row per run) and its markdown."""
    rows = order_rows(summary_rows(test_jsons), order)
    write_summary_csv(csv_path, rows)
    with atomic_path(md_path, suffix=".md") as tmp:
        tmp.write_text(render_markdown(build_table(rows, title, order, by_type, coverage)))
    return rows


def _grid_markdown(grid: Grid) -> list[str]:
    return ["| " + " | ".join(grid.header) + " |", "|" + "---|" * len(grid.header),
            *("| " + " | ".join(row) + " |" for row in grid.rows)]


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def family_key(family: str) -> tuple:
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)
