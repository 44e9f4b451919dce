"""The UCF chain for real: a fabricated UCF-shaped archive served from 127.0.0.1, fetched by URL (a 503 first),
extracted with bsdtar, split by an official-style split folder, features, text, training, evaluation and the results
table with the coverage it was computed on, all through ``snakemake --cores 2``.

No free program writes .rar, so the archive is a zip with UCF101.rar's layout (UCF-101/<Class>/v_<Class>_gXX_cYY.avi);
reading real .rar files is covered by tests/test_download.py::test_real_rar_archives.
"""

from __future__ import annotations

import csv
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from media_fixtures import write_av

from extractors.splits import SplitRecipe, build_splits, write_splits

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar is needed (libarchive-tools)")]

# class -> groups (one clip each); Basketball is in the archive but not in the split, so it is not kept
GROUPS = {"ApplyEyeMakeup": 4, "Archery": 3, "BabyCrawling": 3, "Bowling": 3, "Diving": 3, "Drumming": 3,
          "Basketball": 3}
SPLIT_CLASSES = [c for c in GROUPS if c != "Basketball"]
MISSING = "v_ApplyEyeMakeup_g04_c01"  # listed by the split, absent from the archive


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _serve(folder: Path, fail_first: int):
    """Files of ``folder``; the first ``fail_first`` requests get a 503 (the fetch retries)."""
    state = {"requests": 0}

    class H(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(folder), **kw)

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - the http.server interface
            state["requests"] += 1
            if state["requests"] <= fail_first:
                self.send_error(503)
                return
            super().do_GET()

    srv = _Server(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, state


def _fabricate(root: Path, seconds: float = 1.2) -> tuple[Path, Path]:
    """The archive (zip) and an official-style split folder (AVCA format) for its classes; clips of ``seconds``."""
    tree = root / "src"
    videos = []
    for i, (cls, n) in enumerate(GROUPS.items()):
        d = tree / "UCF-101" / cls
        d.mkdir(parents=True)
        for g in range(1, n + 1):
            vid = f"v_{cls}_g{g:02d}_c01"
            videos.append((vid, cls, f"{cls}_g{g:02d}"))
            if vid != MISSING:
                write_av(d / f"{vid}.avi", seconds=seconds, fps=5, size=(32, 24), seed=10 * i + g)
    served = root / "served"
    served.mkdir()
    archive = served / "UCF101.zip"
    subprocess.run(["bsdtar", "-c", "-f", str(archive), "--format", "zip", "-C", str(tree), "UCF-101"], check=True)
    splits = build_splits([v for v in videos if v[1] in SPLIT_CLASSES],
                          SplitRecipe(n_val_unseen=1, n_test_unseen=1, val_seen_fraction=0.2,
                                      test_seen_fraction=0.2, seed=3))
    official = root / "wd" / "official" / "UCF" / "class-split" / "main_split"
    write_splits(official, splits)
    return archive, official


def _run(wd: Path, config: dict) -> None:
    (wd / "config").mkdir(parents=True, exist_ok=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"],
                       cwd=wd, capture_output=True, text=True, timeout=360, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _check_table(wd: Path, feature_set: str) -> str:
    rows = list(csv.DictReader(open(wd / "results" / "summary.csv")))
    assert sorted((r["dataset"], r["feature_set"], r["model"]) for r in rows) == [
        ("ucf", feature_set, "ale"), ("ucf", feature_set, "avca")]
    for r in rows:
        assert 0 <= float(r["HM"]) <= 100
    md = (wd / "results" / "summary.md").read_text()
    assert "| ALE |" in md and "| AVCA |" in md
    n = sum(GROUPS[c] for c in SPLIT_CLASSES)
    assert "## Coverage" in md and f"- ucf: {n - 1} / {n} listed videos available" in md, md
    assert f"{n - 1} / {n}" in (wd / "resources" / "ucf" / "coverage.md").read_text()
    return md


TINY_TRAINING = {"device": "cpu", "overrides": {"train": {"epochs": 2, "n_batches": 2, "batch_size": 8}}}


def test_ucf_chain_from_a_served_archive_to_the_results_table(tmp_path):
    archive, official = _fabricate(tmp_path)
    srv, state = _serve(archive.parent, fail_first=1)
    try:
        wd = tmp_path / "wd"
        url = f"http://127.0.0.1:{srv.server_address[1]}/UCF101.zip"
        _run(wd, {
            "active_datasets": ["ucf"],
            "datasets": {"ucf": {"source": "ucf_archive", "feature_sets": ["handcrafted"],
                                 "ucf_archive": {"archive": url, "retries": 2},
                                 "splits": {"official_dir": str(official.relative_to(wd))}}},
            "feature_sets": {"handcrafted": {"backbone": "handcrafted", "params": {}}},
            "extract": {"shards": 2, "workers": 0},
            "models": ["ale", "avca"],
            "seeds": [1],
            "training": TINY_TRAINING,
        })
    finally:
        srv.shutdown()
        srv.server_close()
    assert state["requests"] >= 2  # the 503, then the archive
    fetched = wd / "resources" / "ucf" / "archive"
    assert (fetched / "UCF101.zip").read_bytes() == archive.read_bytes()
    assert '"sha256"' in (fetched / "UCF101.zip.json").read_text()
    # only the split's classes were kept
    assert sorted(p.name for p in (wd / "resources" / "ucf" / "videos").iterdir()) == sorted(SPLIT_CLASSES)
    _check_table(wd, "handcrafted")


def test_the_ucf_main_configuration_runs_on_served_files(tmp_path):
    """config/examples/ucf_main.yaml as shipped (SeLaVi, fastText, the ucf profile), with only its sources pointed
    at 127.0.0.1: the archive, a SeLaVi checkpoint in the official layout and a fastText .bin the test makes. The
    official split is given as a folder (the fetched one is checksum-pinned to the real files), the model list and
    epochs are cut for time."""
    from gensim.models import FastText
    from gensim.models.fasttext import save_facebook_model

    from bench.official_layouts import selavi_state, write_selavi
    from extractors.weights import sha256_of

    # SeLaVi's reference mode places int(frames / fps) - 1 windows: 12 frames at 5 fps give one
    archive, official = _fabricate(tmp_path, seconds=2.4)
    served = archive.parent
    write_selavi(served / "selavi_vgg_sound.pth", selavi_state())
    words = [c.lower() for c in ("apply eye makeup archery baby crawling bowling diving drumming").split()]
    ft = FastText(sentences=[words, words[::-1]], vector_size=8, min_count=1, epochs=2, min_n=2, max_n=4,
                  bucket=2000, seed=1, workers=1)
    save_facebook_model(ft, str(served / "wiki.en.bin"))
    config = yaml.safe_load((REPO / "config" / "examples" / "ucf_main.yaml").read_text())
    srv, _ = _serve(served, fail_first=0)
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        wd = tmp_path / "wd"
        ds = config["datasets"]["ucf"]
        ds["ucf_archive"]["archive"] = f"{base}/UCF101.zip"
        ds["splits"] = {"official_dir": str(official.relative_to(wd))}
        params = config["feature_sets"]["main"]["params"]
        params["url"], params["sha256"] = f"{base}/selavi_vgg_sound.pth", sha256_of(served / "selavi_vgg_sound.pth")
        config["text"]["fasttext"]["url"] = f"{base}/wiki.en.bin"
        config["text"]["mem_mb"] = 2000
        config["extract"].update(shards=2, workers=0, device="cpu")
        config.update(models=["ale", "avca"], seeds=[1], training=TINY_TRAINING)
        _run(wd, config)
    finally:
        srv.shutdown()
        srv.server_close()
    md = _check_table(wd, "main")
    assert "ucf · main" in md
    weights = (wd / "resources" / "weights").rglob("selavi_vgg_sound.pth.json")
    assert any('"sha256"' in p.read_text() for p in weights)
