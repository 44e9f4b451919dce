"""`snakemake --report`: a self-contained HTML report of a small demo run, opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_workflow import TINY, snakemake, workdir_with

from training import plots
from training import run_dir as rd

SMALL = {**json.loads(json.dumps(TINY)), "models": ["avca", "ale"], "seeds": [1]}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    wd = workdir_with(tmp_path_factory.mktemp("report") / "work", SMALL)
    snakemake(wd)
    snakemake(wd, "--report", "report.html")
    return wd


def test_the_demo_run_writes_every_figure_and_page(report_run):
    out = report_run / "results" / "report"
    runs = [f"demo/handcrafted/{m}/seed1.svg" for m in ("ale", "avca")]
    for kind in ("curves", "confusion", "maps"):
        assert sorted(str(p.relative_to(out / kind)) for p in (out / kind).rglob("*.svg")) == runs
    assert sorted(p.name for p in (out / "tables").glob("*.html")) == ["summary.html"]
    assert "<table>" in (out / "tables" / "summary.html").read_text()
    data = (out / "data" / "demo.handcrafted.html").read_text()
    assert "broken_no_audio" in data and "no audio stream" in data
    runs_page = (out / "runs" / "demo.handcrafted.html").read_text()
    assert "Resolved run configuration" in runs_page and "stage 1 <code>config.yaml</code>" in runs_page
    curves = (out / "curves" / "demo/handcrafted/avca/seed1.svg").read_text()
    assert curves.startswith("<svg") and "selected epoch" in curves and plots.METRIC_COLOURS["HM"] in curves


def test_the_report_is_self_contained(report_run):
    text = (report_run / "report.html").read_text()
    assert len(text) > 500_000  # the app, its libraries and every result inline
    # nothing loaded from elsewhere: no external scripts, stylesheets, images or frames
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=[\"'](?!data:)", text)
    assert not re.search(r"<link[^>]*\shref=[\"'](?!data:)", text)
    for name in ("summary.html", "seed1.svg", "demo.handcrafted.html"):
        assert name in text
    uris = re.findall(r'"data_uri": "data:([a-z+/]+)[;,]', text)
    assert uris.count("image/svg+xml") == 6  # curves, confusion and maps of both runs, inline
    assert uris.count("text/html") == 3  # the summary table, the data page and the runs page
    for category in ("1. Results tables", "2. Validation curves", "3. Unseen-class confusion",
                     "4. Test embeddings (t-SNE)", "5. Data coverage and failed media", "6. Run configurations"):
        assert category in text


def _screenshot(report: Path, tmp: Path, name: str, result: str | None) -> np.ndarray:
    """A screenshot of the report in headless Chromium; with ``result``, after the report's own navigation
    (``app.setView``, what clicking the result does) has opened the result whose path ends so."""
    from PIL import Image

    page = report
    if result is not None:
        page = tmp / f"{name}.html"
        script = ("<script>window.addEventListener('load', () => setTimeout(() => {"
                  f"const key = Object.keys(results).find(k => k.endsWith({json.dumps(result)}));"
                  "const kind = key.endsWith('.svg') ? 'img' : 'html';"
                  "app.setView({content: kind, contentPath: results[key].data_uri, resultPath: key});"
                  "}, 300));</script>")
        text = report.read_text()
        end = text.rindex("</body>")  # the document's own (the libraries' sources hold the string too)
        page.write_text(text[:end] + script + text[end:])
    png = tmp / f"{name}.png"
    proc = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / ('profile-' + name)}",
                           "--virtual-time-budget=15000", "--window-size=1400,1000", f"--screenshot={png}",
                           page.as_uri()], capture_output=True, text=True, timeout=180)
    assert png.exists(), proc.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def _pixels(img: np.ndarray, hex_colour: str, tol: int = 12) -> int:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(img - rgb).max(axis=2) <= tol).sum())


@pytest.mark.skipif(chromium() is None, reason="chromium is not installed (.ci/run installs the Debian package)")
def test_the_report_opens_in_headless_chromium_with_the_table_and_a_plot(report_run, tmp_path):
    report = report_run / "report.html"
    home = _screenshot(report, tmp_path, "home", None)
    assert home.std() > 20  # not blank: the menu and the workflow graph
    table = _screenshot(report, tmp_path, "table", "tables/summary.html")
    plot = _screenshot(report, tmp_path, "plot", "curves/demo/handcrafted/avca/seed1.svg")
    shutil.copy(tmp_path / "table.png", report_run / "screenshot-table.png")  # kept with the run, for a look
    shutil.copy(tmp_path / "plot.png", report_run / "screenshot-plot.png")
    # the table: its header cells' fill, on a page that is not the landing page
    assert _pixels(table, "#dbe7f5", tol=4) > 2000 and _pixels(home, "#dbe7f5", tol=4) < 100
    # the plot: the HM, S, U and ZSL colours of the validation curves (at least their legend's line)
    for colour in plots.METRIC_COLOURS.values():
        assert _pixels(plot, colour) >= 30, colour
    assert _pixels(table, plots.METRIC_COLOURS["S"]) < 30 <= _pixels(plot, plots.METRIC_COLOURS["S"])


def test_the_figures_from_predictions_without_a_joint_space(tmp_path):
    """A model without a joint video/class space (f-VAEGAN-D2) gets a confusion matrix but no map."""
    pred = {"class_names": ["a", "b", "c", "d"], "labels": [0, 1, 2, 3, 2, 3], "seen": [0, 1], "unseen": [2, 3],
            "pred_gzsl": [0, 0, 2, 1, 3, 3], "pred_zsl": [-1, -1, 2, 2, 3, 3], "beta": 0.4}
    rd.write_predictions(tmp_path / "p.npz", pred)
    back = rd.read_predictions(tmp_path / "p.npz")
    assert back["beta"] == pytest.approx(0.4) and list(back["class_names"]) == ["a", "b", "c", "d"]
    svg = plots.confusion_svg(back, "t")
    assert svg.startswith("<svg") and "1. c" in svg and "2. d" in svg and ">seen<" in svg
    assert plots.map_svg(back, "t") is None
    with_space = {**pred, "video_embedding": np.random.default_rng(0).normal(size=(6, 4)),
                  "class_embedding": np.eye(4), "class_embedding_ids": [0, 1, 2, 3]}
    assert "<circle" in plots.map_svg(with_space, "t")
