"""The report's figures, as SVG: a run's validation curves, its unseen-class confusion and a 2-D map of its test
embeddings. The map is scikit-learn's t-SNE (PCA for ten points or fewer). A model without a shared video/class
embedding space (e.g. f-VAEGAN-D2's classifier) has no map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.report.svg import Svg, axes

METRIC_COLOURS = {"HM": "#d62728", "S": "#1f77b4", "U": "#2ca02c", "ZSL": "#9467bd"}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")


# CSGM's per-epoch training statistics (training/models/csgm.py, csgm_statistics): the panels below the curves
CSGM_PANELS = (("eta_mean", "η: batch mean (bars: ± batch std)"), ("eta_floor", "share of samples at γ"),
               ("step_scale", "step factor QDMA receives"))


def csgm_series(history: Sequence[dict]) -> dict[str, dict[str, list[float]]]:
    """Per CSGM statistic and part (e.g. ``eta_mean`` → ``a_attention``): its value in each epoch of ``history``
    (NaN where an epoch lacks it); empty for a model without CSGM."""
    series: dict[str, dict[str, list[float]]] = {}
    for stat in ("eta_mean", "eta_std", "eta_floor", "step_scale"):
        parts = sorted({k.split(".", 1)[1] for r in history for k in r.get("stats", {}) if k.startswith(stat + ".")})
        if parts:
            series[stat] = {part: [float(r.get("stats", {}).get(f"{stat}.{part}", float("nan"))) for r in history]
                            for part in parts}
    return series if "eta_mean" in series else {}


def curves_svg(history: Sequence[dict], mode: str, title: str, best_epoch: int | None = None) -> str:
    """Stage 1's per-epoch validation S, U, HM and ZSL (percent, evaluation mode ``mode``) and training loss; for a
    model with CSGM also, per part, η's mean and spread, the share of samples at the floor γ and the factor QDMA's
    step received (:func:`csgm_series`)."""
    csgm = csgm_series(history)
    svg = Svg(900, 345 + (335 if csgm else 0), title)
    epochs = [int(r["epoch"]) for r in history]
    xr = (min(epochs, default=0), max(max(epochs, default=1), min(epochs, default=0) + 1))
    px = axes(svg, (70, 45, 470, 230), xr, (0, 100), "epoch", "validation, %")
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
        lpx = axes(svg, (620, 45, 260, 230), xr, (lo - pad, hi + pad), "epoch", "")
        svg.text(750, 40, "training loss", anchor="middle")
        svg.polyline([lpx(e, v) for e, v in zip(epochs, losses)], "#333", 2)
    if csgm:
        _csgm_panels(svg, epochs, xr, csgm, top=390)
    return svg.render()


def _csgm_panels(svg: Svg, epochs: list[int], xr: tuple, series: dict, top: int) -> None:
    svg.text(450, top - 12, "CSGM over training (per epoch, mean over its batches)", size=12, anchor="middle",
             weight="bold")
    parts = sorted(series["eta_mean"])
    colours = {part: PALETTE[i % len(PALETTE)] for i, part in enumerate(parts)}
    for i, (stat, label) in enumerate(CSGM_PANELS):
        if stat not in series:
            continue
        values = [v for part in series[stat].values() for v in part if not math.isnan(v)]
        spread = series.get("eta_std", {}) if stat == "eta_mean" else {}
        lo = min([0.0, *values])
        hi = max([1.0, *values, *(m + s for part in spread for m, s in zip(series[stat][part], spread[part])
                                  if not math.isnan(m + s))])
        px = axes(svg, (70 + 290 * i, top + 10, 230, 200), xr, (lo, hi), "epoch", "")
        svg.text(185 + 290 * i, top + 4, label, anchor="middle", size=10)
        for part, vals in series[stat].items():
            pts = [(e, v) for e, v in zip(epochs, vals) if not math.isnan(v)]
            if part in spread:
                band = [(e, v, s) for (e, v), s in zip(pts, spread[part]) if not math.isnan(s)]
                for e, v, s in band:
                    x, y_hi = px(e, v + s)
                    _, y_lo = px(e, v - s)
                    svg.line(x, y_hi, x, y_lo, colours[part], 4)
            svg.polyline([px(e, v) for e, v in pts], colours[part], 1.8)
    for j, part in enumerate(parts):
        svg.line(80 + 150 * j, top + 262, 100 + 150 * j, top + 262, colours[part], 2.5)
        svg.text(104 + 150 * j, top + 266, part)


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
    """2-D coordinates of ``points``: t-SNE (scikit-learn) for more than ten points, else PCA."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return np.pad(points[:, :2], ((0, 0), (0, max(0, 2 - points.shape[1])))), "raw"
    if len(points) > 10:
        from sklearn.manifold import TSNE  # imported here: seconds of import for a job that may draw no map

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
