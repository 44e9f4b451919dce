"""The results table: the one module that writes ``summary.csv`` and renders ``summary.md``.

``summary.csv`` has one row per dataset, feature set, model and seed. ``summary.md`` lays the numbers out like
Table I of the DAAN paper: model rows grouped by type, a block of S / U / HM / ZSL columns per dataset; with several
seeds a cell reads ``mean ± std`` and a per-seed table follows.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from avzsl.common import atomic_path, code_version
from training.run_dir import TestResult

COLUMNS = ("dataset", "feature_set", "family", "model", "display_name", "seed", "S", "U", "HM", "ZSL", "beta",
           "best_epoch", "inputs", "code_version", "run")
ONE_STEP = "mean as one step"  # a sequence model fed per-video means (no per-step features in the store)
METRICS = ("S", "U", "HM", "ZSL")
# row-group order of the table; families not listed follow alphabetically
FAMILY_ORDER = ("ZSL", "Audio-visual", "Ablation")


def collect(test_jsons: Sequence[str | Path]) -> list[dict]:
    rows = []
    for p in test_jsons:
        r = TestResult.read(p).to_dict()
        rows.append({**{k: r.get(k, "") for k in COLUMNS}, "run": str(Path(p).parent)})
    rows.sort(key=lambda r: (r["dataset"], r["feature_set"], _family_key(r["family"]), r["model"], int(r["seed"])))
    return rows


def write_csv(path: str | Path, rows: Sequence[dict]) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{float(r[k]):.2f}" if k in (*METRICS, "beta") else r[k]) for k in COLUMNS})


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in METRICS + ("beta",):
            r[k] = float(r[k])
        r["seed"], r["best_epoch"] = int(r["seed"]), int(r["best_epoch"])
    return rows


def render_markdown(rows: Sequence[dict], title: str = "Results", order: Sequence[str] | None = None,
                    by_type: bool = True, coverage: Mapping[str, str] | None = None) -> str:
    """Table-I layout: rows grouped by type (``by_type``), in ``order`` within a group (else alphabetically); with
    ``by_type=False`` a plain list in ``order`` (e.g. the ablation rows of Table II). ``coverage``: per dataset, a
    sentence saying on how much of the listed (official) videos the numbers were computed."""
    blocks = sorted({(r["dataset"], r["feature_set"]) for r in rows})
    rank = {m: i for i, m in enumerate(order or [])}

    def key(m):
        within = (rank.get(m[1], len(rank)), m[1])
        return ((_family_key(m[0]),) if by_type else ()) + within
    models = sorted({(r["family"], r["model"], r["display_name"]) for r in rows}, key=key)
    cells = defaultdict(list)
    for r in rows:
        cells[(r["model"], r["dataset"], r["feature_set"])].append(r)
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [f"# {title}", "",
             "Mean class accuracy in percent on the test split (two-stage protocol, calibrated stacking β chosen on "
             "validation). " + (f"Mean ± std over seeds {', '.join(map(str, seeds))}." if len(seeds) > 1
                                else f"Seed {seeds[0]}." if seeds else ""), ""]
    header = (["Type", "Model"] if by_type else ["Model"]) + [f"{d} · {fs} {m}" if i == 0 else m for d, fs in blocks
                                                           for i, m in enumerate(METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    last_family = None
    for family, model, display in models:
        row = [family if family != last_family else "", display] if by_type else [display]
        last_family = family
        for d, fs in blocks:
            runs = cells.get((model, d, fs), [])
            mark = " †" if any(r.get("inputs") == ONE_STEP for r in runs) else ""
            row += [_cell([float(r[m]) for r in runs]) + mark for m in METRICS]
        lines.append("| " + " | ".join(row) + " |")
    if any(r.get("inputs") == ONE_STEP for r in rows):
        lines += ["", "† a temporal model run on per-video mean features (each mean read as a one-step sequence): "
                  "the feature store has no per-step features (e.g. AVCA's released h5 files; use the TCaF pickle "
                  "layout or extracted features for per-step inputs)."]
    if len(seeds) > 1:
        lines += ["", "## Per seed", "", "| Dataset | Features | Model | Seed | S | U | HM | ZSL | β | epoch |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['dataset']} | {r['feature_set']} | {r['display_name']} | {r['seed']} | "
                         + " | ".join(f"{float(r[m]):.2f}" for m in METRICS)
                         + f" | {float(r['beta']):.2f} | {r['best_epoch']} |")
    if coverage:
        lines += ["", "## Coverage", "", "The numbers were computed on the videos that could be obtained:", ""]
        lines += [f"- {name}: {text}" for name, text in sorted(coverage.items())]
    versions = sorted({str(r["code_version"]) for r in rows})
    lines += ["", f"Code version: {', '.join(versions) or code_version()}. Each run's resolved configuration, seed "
              "and git SHA are in its run directory (`config.yaml`, `test.json`).", ""]
    return "\n".join(lines)


def write_summary(test_jsons: Sequence[str | Path], csv_path: str | Path, md_path: str | Path,
                  title: str = "Results", order: Sequence[str] | None = None, by_type: bool = True,
                  coverage: Mapping[str, str] | None = None) -> list[dict]:
    rows = collect(test_jsons)
    if order:
        rank = {m: i for i, m in enumerate(order)}
        rows.sort(key=lambda r: (r["dataset"], r["feature_set"], _family_key(r["family"]), rank.get(r["model"], 1e9),
                                 int(r["seed"])))
    write_csv(csv_path, rows)
    with atomic_path(md_path, suffix=".md") as tmp:
        tmp.write_text(render_markdown(rows, title, order, by_type, coverage))
    return rows


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _family_key(family: str) -> tuple:
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)
