"""The report's figures and pages: what ``snakemake --report`` shows besides the workflow itself.

From the run directories (:mod:`training.run_dir`) and the results tables (:mod:`training.results`) this writes, into
one folder per report category:

    tables/   <table>.html                                       the results tables (summary, Table I, ablation)
    curves/   <dataset>/<feature set>/<model>/seed<k>.svg        per-epoch validation S, U, HM, ZSL and the loss
    confusion/<dataset>/<feature set>/<model>/seed<k>.svg        unseen test classes: GZSL and ZSL confusion
    maps/     <dataset>/<feature set>/<model>/seed<k>.svg        2-D map (t-SNE) of the test embeddings and class texts
    data/     <dataset>.<feature set>.html                       coverage and the media that could not be used
    runs/     <dataset>.<feature set>.html                       every run's numbers with its resolved configuration

Figures are plain SVG written here (no plotting library); the map uses scikit-learn's t-SNE when it is installed
(it comes with sentence-transformers) and a PCA otherwise. A model without a shared video/class embedding space
(e.g. f-VAEGAN-D2's classifier) has no map.
"""

from __future__ import annotations

import csv
import html
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from avzsl.common import write_text_atomic
from training import run_dir as rd

log = logging.getLogger("avzsl.plots")

METRIC_COLOURS = {"HM": "#d62728", "S": "#1f77b4", "U": "#2ca02c", "ZSL": "#9467bd"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")
FONT = "font-family='DejaVu Sans, Arial, sans-serif'"


# ------------------------------------------------------------------------------------------------ SVG
class Svg:
    """A minimal SVG canvas: shapes and text in pixel coordinates."""

    def __init__(self, width: int, height: int, title: str = ""):
        self.width, self.height = width, height
        self.parts = [f"<rect width='{width}' height='{height}' fill='white'/>"]
        if title:
            self.text(width / 2, 20, title, size=14, anchor="middle", weight="bold")

    def line(self, x1, y1, x2, y2, colour="#000", width=1.0, dash=""):
        d = f" stroke-dasharray='{dash}'" if dash else ""
        self.parts.append(f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{colour}' "
                          f"stroke-width='{width}'{d}/>")

    def polyline(self, points, colour, width=2.0):
        if points:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            self.parts.append(f"<polyline points='{pts}' fill='none' stroke='{colour}' stroke-width='{width}'/>")

    def rect(self, x, y, w, h, fill, stroke="none", opacity=1.0):
        self.parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' fill='{fill}' "
                          f"stroke='{stroke}' fill-opacity='{opacity}'/>")

    def circle(self, x, y, r, fill, stroke="none", opacity=1.0):
        self.parts.append(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{r}' fill='{fill}' stroke='{stroke}' "
                          f"fill-opacity='{opacity}'/>")

    def diamond(self, x, y, r, fill, stroke="#000"):
        pts = f"{x:.1f},{y - r:.1f} {x + r:.1f},{y:.1f} {x:.1f},{y + r:.1f} {x - r:.1f},{y:.1f}"
        self.parts.append(f"<polygon points='{pts}' fill='{fill}' stroke='{stroke}' stroke-width='1'/>")

    def text(self, x, y, s, size=11, anchor="start", colour="#000", weight="normal", rotate=0.0):
        r = f" transform='rotate({rotate} {x:.1f} {y:.1f})'" if rotate else ""
        self.parts.append(f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' fill='{colour}' "
                          f"font-weight='{weight}' {FONT}{r}>{html.escape(str(s))}</text>")

    def render(self) -> str:
        return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.width}' height='{self.height}' "
                f"viewBox='0 0 {self.width} {self.height}'>\n" + "\n".join(self.parts) + "\n</svg>\n")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _axes(svg: Svg, box, xr, yr, xlabel="", ylabel=""):
    """Frame, ticks and labels of a panel; returns the data-to-pixel mapping."""
    x0, y0, w, h = box
    (xa, xb), (ya, yb) = xr, yr

    def px(x, y):
        return x0 + (x - xa) / ((xb - xa) or 1) * w, y0 + h - (y - ya) / ((yb - ya) or 1) * h

    svg.rect(x0, y0, w, h, "none", stroke="#444")
    for t in _ticks(ya, yb):
        _, y = px(xa, t)
        svg.line(x0, y, x0 + w, y, "#ddd", 0.8)
        svg.text(x0 - 5, y + 4, f"{t:g}", size=10, anchor="end")
    for t in _ticks(xa, xb, min(8, max(1, int(xb - xa)))):
        if float(t).is_integer():
            x, _ = px(t, ya)
            svg.line(x, y0 + h, x, y0 + h + 4, "#444")
            svg.text(x, y0 + h + 16, f"{t:g}", size=10, anchor="middle")
    if xlabel:
        svg.text(x0 + w / 2, y0 + h + 32, xlabel, anchor="middle")
    if ylabel:
        svg.text(x0 - 38, y0 + h / 2, ylabel, anchor="middle", rotate=-90)
    return px


# ------------------------------------------------------------------------------------------------ figures
def curves_svg(history: Sequence[dict], mode: str, title: str, best_epoch: int | None = None) -> str:
    """Stage 1's per-epoch validation S, U, HM and ZSL (percent, evaluation mode ``mode``) and training loss."""
    svg = Svg(900, 345, title)
    epochs = [int(r["epoch"]) for r in history]
    xr = (min(epochs, default=0), max(max(epochs, default=1), min(epochs, default=0) + 1))
    px = _axes(svg, (70, 45, 470, 230), xr, (0, 100), "epoch", "validation, %")
    for i, (metric, colour) in enumerate(METRIC_COLOURS.items()):
        pts = [px(e, float(r["val"].get(mode, {}).get(metric, float("nan")))) for e, r in zip(epochs, history)]
        svg.polyline([p for p in pts if not math.isnan(p[1])], colour, 2.5 if metric == "HM" else 1.5)
        for p in pts:
            if not math.isnan(p[1]):
                svg.circle(*p, 2.5, colour)
        svg.line(80 + 70 * i, 330, 100 + 70 * i, 330, colour, 2.5)
        svg.text(104 + 70 * i, 334, metric)
    if best_epoch is not None:
        x, _ = px(best_epoch, 0)
        svg.line(x, 45, x, 275, "#555", 1, dash="4,3")
        svg.text(x + 3, 57, f"selected epoch {best_epoch}", size=10, colour="#555")
    losses = [float(r["loss"]["loss"]) for r in history if "loss" in r.get("loss", {})]
    if losses:
        lo, hi = min(losses), max(losses)
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
        lpx = _axes(svg, (620, 45, 260, 230), xr, (lo - pad, hi + pad), "epoch", "")
        svg.text(750, 40, "training loss", anchor="middle")
        svg.polyline([lpx(e, v) for e, v in zip(epochs, losses)], "#333", 2)
    return svg.render()


def confusion_svg(pred: dict, title: str) -> str:
    """Two row-normalised confusion matrices of the unseen test classes: GZSL (columns: the unseen classes and "any
    seen class") and ZSL (unseen classes only). ``pred``: :func:`training.run_dir.read_predictions`'s arrays."""
    names = [str(n) for n in pred["class_names"]]
    unseen = [int(c) for c in pred["unseen"]]
    labels = np.asarray(pred["labels"])
    n = len(unseen)
    col = {c: i for i, c in enumerate(unseen)}
    gzsl = np.zeros((n, n + 1))
    zsl = np.zeros((n, n))
    for y, g, z in zip(labels, pred["pred_gzsl"], pred["pred_zsl"]):
        if int(y) not in col:
            continue
        r = col[int(y)]
        gzsl[r, col.get(int(g), n)] += 1  # column n: any seen class
        if int(z) in col:
            zsl[r, col[int(z)]] += 1
    cell = max(14, min(30, 520 // max(n + 1, 1)))
    label_w = min(330, 14 + 6 * max((len(names[c]) for c in unseen), default=10))
    top = 90
    width = max(720, label_w + max((n + 1) * cell + 40, 160) + n * cell + 40)
    svg = Svg(int(width), int(top + n * cell + 60), title)
    for i, c in enumerate(unseen):
        svg.text(label_w - 6, top + i * cell + cell * 0.65, f"{i + 1}. {names[c]}", size=10, anchor="end")
    x = label_w
    for name, m, cols in (("GZSL (β applied)", gzsl, [str(i + 1) for i in range(n)] + ["seen"]),
                          ("ZSL (unseen only)", zsl, [str(i + 1) for i in range(n)])):
        svg.text(x, top - 34, name, weight="bold")
        for j, lab in enumerate(cols):
            svg.text(x + j * cell + cell / 2, top - 6, lab, size=9, anchor="middle")
        rows = m.sum(axis=1, keepdims=True)
        frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        for i in range(n):
            for j in range(len(cols)):
                f = frac[i, j]
                shade = int(255 - 200 * f)
                svg.rect(x + j * cell, top + i * cell, cell, cell, f"rgb({shade},{shade},255)", stroke="#eee")
                if m[i, j]:
                    svg.text(x + j * cell + cell / 2, top + i * cell + cell * 0.65, int(m[i, j]), size=9,
                             anchor="middle", colour="white" if f > 0.6 else "#000")
            if m[i, i] and i < len(cols):
                svg.rect(x + i * cell, top + i * cell, cell, cell, "none", stroke="#000")
        x += max(len(cols) * cell + 40, 160)
    svg.text(label_w, top + n * cell + 24, "rows: true unseen class (videos per cell; shade: share of the row); "
             "columns: predicted class", size=10)
    return svg.render()


def embed_2d(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``points``: t-SNE (scikit-learn) when installed and there are enough points, else PCA."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return np.pad(points[:, :2], ((0, 0), (0, max(0, 2 - points.shape[1])))), "raw"
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        TSNE = None
    if TSNE is not None and len(points) > 10:
        perplexity = float(min(30.0, (len(points) - 1) / 3))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        return tsne.fit_transform(points), "t-SNE"
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out = centred @ vt[:2].T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))), "PCA"


def _standardise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=0)
    rms = float(np.sqrt((x ** 2).sum(axis=1).mean()))
    return x / rms if rms > 0 else x


def map_svg(pred: dict, title: str) -> str | None:
    """The test videos and the class texts in the model's embedding space, in 2-D; unseen classes in colour, seen
    classes grey. None when the model has no shared video/class embedding space."""
    if "video_embedding" not in pred:
        return None
    videos = np.asarray(pred["video_embedding"], dtype=np.float64)
    classes = np.asarray(pred["class_embedding"], dtype=np.float64)
    class_ids = [int(c) for c in pred["class_embedding_ids"]]
    # each modality centred and scaled on its own: the map shows which class text a video lies near, not the
    # offset between the two modalities (which dominates a joint t-SNE otherwise)
    xy, method = embed_2d(np.concatenate([_standardise(videos), _standardise(classes)]))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    names = [str(n) for n in pred["class_names"]]
    unseen = [int(c) for c in pred["unseen"]]
    colour = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(unseen)}
    svg = Svg(960, 600, f"{title} ({method}, each modality centred)")
    box = (30, 40, 560, 540)

    def px(p):
        return box[0] + (p[0] - lo[0]) / span[0] * box[2], box[1] + box[3] - (p[1] - lo[1]) / span[1] * box[3]

    svg.rect(*box, "none", stroke="#ccc")
    labels = np.asarray(pred["labels"])
    for keep_unseen in (False, True):  # seen first, so that unseen points lie on top
        for p, y in zip(xy[:len(videos)], labels):
            if (int(y) in colour) == keep_unseen:
                svg.circle(*px(p), 3.5 if keep_unseen else 2.5, colour.get(int(y), "#bbb"),
                           opacity=0.85 if keep_unseen else 0.6)
    for p, c in zip(xy[len(videos):], class_ids):
        x, y = px(p)
        if c in colour:
            svg.diamond(x, y, 8, colour[c])
            svg.text(x + 9, y - 6, unseen.index(c) + 1, size=11, weight="bold")
        else:
            svg.diamond(x, y, 4, "#888", stroke="#666")
    lx, ly = 610, 60
    svg.text(lx, ly - 14, "unseen test classes (● video, ◆ class text)", weight="bold")
    for i, c in enumerate(unseen):
        svg.circle(lx + 6, ly + i * 18, 5, colour[c])
        svg.text(lx + 16, ly + 4 + i * 18, f"{i + 1}. {names[c]}", size=10)
    y = ly + len(unseen) * 18 + 10
    svg.circle(lx + 6, y, 4, "#bbb")
    svg.text(lx + 16, y + 4, "seen classes' videos and texts (grey)", size=10)
    return svg.render()


# ------------------------------------------------------------------------------------------------ pages
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


def markdown_html(text: str) -> str:
    """The markdown the pipeline writes (headings, paragraphs, pipe tables, inline code) as HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def inline(s: str) -> str:
        parts = html.escape(s).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    def flush():
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append("</table>")
            table.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        flush()
        if s.startswith("#"):
            level = min(len(s) - len(s.lstrip("#")), 6)
            out.append(f"<h{level}>{inline(s[level:].strip())}</h{level}>")
        elif s:
            out.append(f"<p>{inline(s)}</p>")
    flush()
    return "\n".join(out)


def page(title: str, body: str) -> str:
    return PAGE.format(title=html.escape(title), body=body)


def tsv_html(path: str | Path) -> str:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if len(rows) <= 1:
        return "<p>none</p>"
    head, *body = rows
    return ("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
            + "</table>")


def data_page(dataset: str, feature_set: str, failed_media: str | Path | None, coverage: str | Path | None) -> str:
    parts = [f"<h1>Data: {html.escape(dataset)} · {html.escape(feature_set)}</h1>"]
    if coverage and Path(coverage).exists():
        parts += ["<h2>Coverage</h2>", markdown_html(Path(coverage).read_text())]
    else:
        parts += ["<h2>Coverage</h2>", "<p>no download coverage for this dataset (its videos are not downloaded "
                  "from a list)</p>"]
    parts.append("<h2>Media that could not be used</h2>")
    if failed_media and Path(failed_media).exists():
        parts.append(tsv_html(failed_media))
    else:
        parts.append("<p>no failed-media list (the features were imported, not extracted)</p>")
    return page(f"{dataset} {feature_set}", "\n".join(parts))


def runs_page(dataset: str, feature_set: str, runs: Sequence[tuple[str, dict]]) -> str:
    """Every run's test numbers with its resolved configuration (the test's ``config``) and both stages' headers."""
    parts = [f"<h1>Runs: {html.escape(dataset)} · {html.escape(feature_set)}</h1>",
             "<table><tr><th>model</th><th>seed</th><th>S</th><th>U</th><th>HM</th><th>ZSL</th><th>β</th>"
             "<th>epoch</th><th>git</th><th>code version</th><th>run directory</th></tr>"]
    for run, r in runs:
        parts.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            r["display_name"], r["seed"], *(f"{float(r[k]):.2f}" for k in ("S", "U", "HM", "ZSL")),
            f"{float(r['beta']):.2f}", r["best_epoch"], (r.get("git_sha") or "–")[:12], r.get("code_version", ""),
            run)) + "</tr>")
    parts.append("</table>")
    for run, r in runs:
        parts.append(f"<h2 id='{html.escape(run)}'>{html.escape(r['display_name'])}, seed {r['seed']}</h2>")
        parts.append(f"<p><code>{html.escape(run)}</code></p>")
        parts.append("<h3>Resolved run configuration</h3><pre>"
                     + html.escape(yaml.safe_dump(r.get("config", {}), sort_keys=False)) + "</pre>")
        for stage in (1, 2):
            header = Path(rd.stage_path(run, stage)) / rd.CONFIG
            if header.exists():
                parts.append(f"<details><summary>stage {stage} <code>{rd.CONFIG}</code></summary><pre>"
                             + html.escape(header.read_text()) + "</pre></details>")
    return page(f"runs {dataset} {feature_set}", "\n".join(parts))


# ------------------------------------------------------------------------------------------------ all of it
def _primary_mode(result: dict, history: Sequence[dict]) -> str:
    """The mode the table reports: recorded in test.json; runs from before it was recorded ask the registry."""
    if result.get("primary_mode"):
        return result["primary_mode"]
    model = result["model"]
    try:
        from training.models import get_model_class

        return get_model_class(model).primary_mode
    except (KeyError, ValueError, ImportError):
        modes = sorted(history[0]["val"]) if history else []
        return modes[0] if modes else "video"


FOLDERS = ("tables", "curves", "confusion", "maps", "data", "runs")


def write_report_files(test_jsons: Sequence[str | Path], tables: Sequence[str | Path], out_dir: str | Path,
                       data: Sequence[dict] = (), predictions: Sequence[str | Path] | None = None) -> dict[str, int]:
    """Write every figure and page into the folders of ``out_dir`` (:data:`FOLDERS`).

    ``predictions``: the runs' test predictions, each in its run directory (default: the run directory's file).

    ``data``: one ``{"dataset", "feature_set", "failed_media", "coverage"}`` per dataset and feature set (paths may
    be empty). Returns the number of files written per folder."""
    folders = {k: Path(out_dir) / k for k in FOLDERS}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(folders, 0)

    def put(kind: str, rel: str, text: str):
        write_text_atomic(folders[kind] / rel, text)
        counts[kind] += 1

    for t in tables:
        put("tables", f"{Path(t).stem}.html", page(Path(t).stem, markdown_html(Path(t).read_text())))
    given = {str(Path(p).parent): Path(p) for p in predictions or ()}
    by_block: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for p in test_jsons:
        run = str(Path(p).parent)
        r = rd.TestResult.read(p).to_dict()
        by_block.setdefault((r["dataset"], r["feature_set"]), []).append((run, r))
        rel = f"{r['dataset']}/{r['feature_set']}/{r['model']}/seed{r['seed']}.svg"
        name = f"{r['display_name']} · {r['dataset']} · {r['feature_set']} · seed {r['seed']}"
        stage1 = rd.stage_path(run, 1)
        if (Path(stage1) / rd.LOG).exists():
            history = rd.read_log(stage1)
            put("curves", rel, curves_svg(history, _primary_mode(r, history),
                                          f"{name}: stage-1 validation", r.get("best_epoch")))
        found = given.get(run, Path(rd.predictions_path(run)))
        if not found.exists():
            log.warning("%s: no test predictions (%s); no confusion matrix or map", run, rd.PREDICTIONS)
            continue
        pred = rd.read_predictions(found)
        put("confusion", rel, confusion_svg(pred, f"{name}: unseen test classes"))
        svg = map_svg(pred, f"{name}: test embeddings")
        if svg is not None:
            put("maps", rel, svg)
    for (ds, fs), runs in sorted(by_block.items()):
        put("runs", f"{ds}.{fs}.html", runs_page(ds, fs, sorted(runs, key=lambda x: (x[1]["model"], x[1]["seed"]))))
    for d in data:
        put("data", f"{d['dataset']}.{d['feature_set']}.html",
            data_page(d["dataset"], d["feature_set"], d.get("failed_media"), d.get("coverage")))
    return counts
