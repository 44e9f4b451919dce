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

from training import run_dir as rd
from training.report import figures
from training.report.files import write_report_files
from training.report.tables import write_summary

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


@pytest.mark.slow
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
    assert curves.startswith("<svg") and "selected epoch" in curves and figures.METRIC_COLOURS["HM"] in curves


@pytest.mark.slow
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


@pytest.mark.slow
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
    for colour in figures.METRIC_COLOURS.values():
        assert _pixels(plot, colour) >= 30, colour
    assert _pixels(table, figures.METRIC_COLOURS["S"]) < 30 <= _pixels(plot, figures.METRIC_COLOURS["S"])


def test_the_figures_from_predictions_without_a_joint_space(tmp_path):
    """A model without a joint video/class space (f-VAEGAN-D2) gets a confusion matrix but no map."""
    pred = {"class_names": ["a", "b", "c", "d"], "labels": [0, 1, 2, 3, 2, 3], "seen": [0, 1], "unseen": [2, 3],
            "pred_gzsl": [0, 0, 2, 1, 3, 3], "pred_zsl": [-1, -1, 2, 2, 3, 3], "beta": 0.4}
    rd.write_predictions(tmp_path / "p.npz", pred)
    back = rd.read_predictions(tmp_path / "p.npz")
    assert back["beta"] == pytest.approx(0.4) and list(back["class_names"]) == ["a", "b", "c", "d"]
    svg = figures.confusion_svg(back, "t")
    assert svg.startswith("<svg") and "1. c" in svg and "2. d" in svg and ">seen<" in svg
    assert figures.map_svg(back, "t") is None
    with_space = {**pred, "video_embedding": np.random.default_rng(0).normal(size=(6, 4)),
                  "class_embedding": np.eye(4), "class_embedding_ids": [0, 1, 2, 3]}
    assert "<circle" in figures.map_svg(with_space, "t")


def _test_json(run: Path, model: str, seed: int, hm: float) -> Path:
    run.mkdir(parents=True)
    r = {"dataset": "demo", "feature_set": "handcrafted", "family": "Audio-visual", "model": model,
         "display_name": model.upper(), "seed": seed, "S": hm + 1, "U": hm - 1, "HM": hm, "ZSL": hm + 2, "beta": 0.4,
         "best_epoch": 3, "code_version": "git:abc", "config": {"model": model}}
    (run / "test.json").write_text(json.dumps(r))
    return run / "test.json"


def test_the_pages_show_the_records_the_tables_were_made_from(tmp_path):
    """The table page holds the markdown table's numbers (from the csv, never from the markdown); the data page
    the coverage per split and the failed media; the runs page every run's configuration."""
    tests = [_test_json(tmp_path / "runs" / f"avca{s}", "avca", s, hm) for s, hm in ((1, 40.0), (2, 44.0))]
    write_summary(tests, tmp_path / "summary.csv", tmp_path / "summary.md", "Demo results", ["avca"])
    (tmp_path / "summary.md").unlink()
    (tmp_path / "coverage.tsv").write_text("split\tlabel\tavailable\tlisted\tfraction\n"
                                           "all\tdog\t1\t2\t0.5000\nall\tcat\t2\t2\t1.0000\n"
                                           "stage_2_test_unseen\tcat\t2\t2\t1.0000\n")
    (tmp_path / "failed_media.tsv").write_text("video_id\treason\nclip7\tno audio stream\n")
    data = [{"dataset": "demo", "feature_set": "handcrafted", "failed_media": str(tmp_path / "failed_media.tsv"),
             "coverage": str(tmp_path / "coverage.tsv")}]
    tables = {"summary": {"csv": str(tmp_path / "summary.csv"), "title": "Demo results", "models": ["avca"],
                          "layout": "by_type"}}
    counts = write_report_files(tests, tables, tmp_path / "report", data)
    assert counts == {"tables": 1, "curves": 0, "confusion": 0, "maps": 0, "data": 1, "runs": 1}
    table = (tmp_path / "report" / "tables" / "summary.html").read_text()
    assert "<h1>Demo results</h1>" in table and "<th>demo · handcrafted S</th>" in table
    assert "<td>Audio-visual</td><td>AVCA</td><td>43.00 ± 2.83</td>" in table  # S of seeds 1 and 2: 41, 45
    assert "<h2>Per seed</h2>" in table and "<td>44.00</td>" in table
    assert "<li>demo: 3 / 4 listed videos available (75.0 %); stage_2_test_unseen 2 / 2 (100.0 %)</li>" in table
    assert "<code>test.json</code>" in table
    assert "|" not in table
    page = (tmp_path / "report" / "data" / "demo.handcrafted.html").read_text()
    assert "All listed videos, per class: 3 / 4 (75.0 %)" in page
    assert "Split <code>stage_2_test_unseen</code>: 2 / 2 (100.0 %)" in page
    assert "<td>dog</td><td>1</td><td>2</td><td>50.0 %</td>" in page
    assert "<td>clip7</td><td>no audio stream</td>" in page
    runs = (tmp_path / "report" / "runs" / "demo.handcrafted.html").read_text()
    assert runs.count("Resolved run configuration") == 2 and "model: avca" in runs


def test_the_curves_of_a_model_with_csgm_show_it_over_training():
    """Per part: η's mean with its spread, the share at the floor γ and QDMA's step factor, from stage 1's log."""
    from training.report.figures import csgm_series, curves_svg

    history = [{"epoch": e, "val": {"video": {"S": 10.0, "U": 5.0, "HM": 6.7, "ZSL": 20.0}}, "loss": {"loss": 1.0},
                "stats": {"eta_mean.a_attention": 0.5 - 0.02 * e, "eta_std.a_attention": 0.1 / e,
                          "eta_floor.a_attention": 0.2 * e, "step_scale.a_attention": 0.5 - 0.02 * e}}
               for e in (1, 2, 3)]
    series = csgm_series(history)
    assert series["eta_floor"]["a_attention"] == pytest.approx([0.2, 0.4, 0.6])
    assert series["step_scale"]["a_attention"] == pytest.approx([0.48, 0.46, 0.44])
    with_csgm = curves_svg(history, "video", "daan")
    assert "CSGM over training" in with_csgm and "share of samples at γ" in with_csgm and "a_attention" in with_csgm
    plain = [{k: v for k, v in r.items() if k != "stats"} for r in history]
    assert csgm_series(plain) == {} and "CSGM" not in curves_svg(plain, "video", "avca")
