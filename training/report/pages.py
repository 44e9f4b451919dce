"""The report's HTML pages, each rendered from records: a results table (:class:`~training.report.tables.ResultsTable`),
a dataset's coverage and failed media (:class:`~training.report.records.DataRecord`) and a block's runs
(:class:`~training.report.records.Run`)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import yaml

from extractors.sources.download import coverage_by_split, percent
from training import run_dir as rd
from training.report.records import METRICS, DataRecord, Run
from training.report.tables import COVERAGE_LEAD, Grid, ResultsTable

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{ font-family: sans-serif; margin: 1em 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #dbe7f5; }}
pre {{ background: #f7f7f7; padding: 0.6em; font-size: 0.8em; overflow-x: auto; }}
</style></head><body>
{body}
</body></html>
"""


def page(title: str, body: str) -> str:
    return PAGE.format(title=html.escape(title), body=body)


def prose(text: str) -> str:
    """Escaped text, with `backticks` as code."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def html_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def _grid(grid: Grid) -> str:
    return html_table(grid.header, grid.rows)


def table_page(name: str, table: ResultsTable) -> str:
    parts = [f"<h1>{prose(table.title)}</h1>", f"<p>{prose(table.lead)}</p>", _grid(table.grid)]
    parts += [f"<p>{prose(note)}</p>" for note in table.notes]
    if table.per_seed:
        parts += ["<h2>Per seed</h2>", _grid(table.per_seed)]
    if table.coverage:
        parts += ["<h2>Coverage</h2>", f"<p>{prose(COVERAGE_LEAD)}</p>", "<ul>"]
        parts += [f"<li>{prose(ds)}: {prose(text)}</li>" for ds, text in table.coverage.items()]
        parts.append("</ul>")
    parts.append(f"<p>{prose(table.closing)}</p>")
    return page(name, "\n".join(parts))


def data_page(data: DataRecord) -> str:
    parts = [f"<h1>Data: {prose(data.dataset)} · {prose(data.feature_set)}</h1>", "<h2>Coverage</h2>"]
    if data.coverage is None:
        parts.append("<p>no download coverage for this dataset (its videos are not downloaded from a list)</p>")
    else:
        parts.append("<p>Available clips / listed clips.</p>")
        for split, available, listed, rows in coverage_by_split(data.coverage):
            title = "All listed videos, per class" if split == "all" else f"Split `{split}`"
            parts.append(f"<h3>{prose(title)}: {available} / {listed} ({percent(available, listed)})</h3>")
            parts.append(html_table(("class", "available", "listed", "%"),
                                    [(r["label"], r["available"], r["listed"], percent(r["available"], r["listed"]))
                                     for r in rows]))
    parts.append("<h2>Media that could not be used</h2>")
    if data.failed_media is None:
        parts.append("<p>no failed-media list (the features were imported, not extracted)</p>")
    elif not data.failed_media:
        parts.append("<p>none</p>")
    else:
        parts.append(html_table(("video_id", "reason"), data.failed_media))
    return page(f"{data.dataset} {data.feature_set}", "\n".join(parts))


def runs_page(dataset: str, feature_set: str, runs: Sequence[Run]) -> str:
    """Every run's test numbers with its resolved configuration (the test's ``config``) and both stages' headers."""
    rows = [(r.result.display_name, r.result.seed, *(f"{getattr(r.result, m):.2f}" for m in METRICS),
             f"{r.result.beta:.2f}", r.result.best_epoch, (r.result.git_sha or "–")[:12], r.result.code_version,
             r.path) for r in runs]
    parts = [f"<h1>Runs: {prose(dataset)} · {prose(feature_set)}</h1>",
             html_table(("model", "seed", *METRICS, "β", "epoch", "git", "code version", "run directory"), rows)]
    for r in runs:
        parts.append(f"<h2 id='{html.escape(r.path)}'>{html.escape(r.result.display_name)}, seed {r.result.seed}</h2>")
        parts.append(f"<p><code>{html.escape(r.path)}</code></p>")
        parts.append("<h3>Resolved run configuration</h3><pre>"
                     + html.escape(yaml.safe_dump(r.result.config, sort_keys=False)) + "</pre>")
        for stage, header in sorted(r.headers.items()):
            parts.append(f"<details><summary>stage {stage} <code>{rd.CONFIG}</code></summary><pre>"
                         + html.escape(header) + "</pre></details>")
    return page(f"runs {dataset} {feature_set}", "\n".join(parts))
