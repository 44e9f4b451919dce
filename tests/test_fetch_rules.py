"""The weights and archive rows of the hostile-network cases through Snakemake (rules fetch_weights,
fetch_ucf_archive, ucf_archive): after each bad answer no file exists under its final name, the rule's log ends in
one line saying what failed, and a plain rerun once the server (or the archive) is fixed succeeds without deleting
anything by hand. The same cases through the commands: tests/test_fetch_verified.py, tests/test_archive_safety.py."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_DEMO_CONFIG
from hostile_server import ETAG, FILES, serve_hostile
from test_archive_safety import GOOD, _tar
from test_workflow import snakemake, workdir_with

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PCA = "vggish_pca_params.npz"
PCA_TARGET = f"resources/weights/vgg/audio/{PCA}"
PCA_LOG = f"logs/fetch_weights/vgg/audio/{PCA}.log"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
FAST = {"retries": 1, "backoff": 0.01}


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


rng = np.random.default_rng(0)
PCA_BYTES = _npz(pca_eigen_vectors=rng.standard_normal((128, 128)), pca_means=rng.standard_normal((128, 1)))
SERVED = {**FILES, f"/{PCA}": PCA_BYTES}


def _weights_config(base: str, cases, **fetch) -> dict:
    """One feature set per case, whose VGGish PCA file is served under /<case>/."""
    cfg = copy.deepcopy(TINY_DEMO_CONFIG)
    for case in cases:
        cfg["feature_sets"][case] = {
            "audio": {"backbone": "vggish", "params": {"url": f"{base}/vggish.pth", "pca_url": f"{base}/{case}/{PCA}"}},
            "video": {"backbone": "handcrafted", "params": {}}}
    cfg["fetch"] = {**FAST, **fetch}
    return cfg


def _archive_config(archives: dict[str, str], **fetch) -> dict:
    """One ucf_archive dataset per (name, archive)."""
    return {"active_datasets": list(archives),
            "datasets": {name: {"source": "ucf_archive", "feature_sets": ["handcrafted"],
                                "ucf_archive": {"archive": archive, "retries": 1}} for name, archive in archives.items()},
            "feature_sets": {"handcrafted": {"backbone": "handcrafted", "params": {}}},
            "fetch": {**FAST, **fetch}}


def _failed_line(wd: Path, proc, log: str, command: str, *words: str) -> str:
    """The rule failed, and its log ends in one line (besides progress log lines) naming what failed."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    text = (wd / log).read_text()
    assert "Traceback" not in text, text
    lines = [x for x in text.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert len(lines) == 1 and lines[0].startswith(f"avzsl {command}: error: "), text
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _nothing_final(path: Path) -> None:
    assert not path.exists() and not Path(str(path) + ".json").exists()


def _fetched(wd: Path, target: str, body: bytes) -> None:
    out = wd / target
    assert out.read_bytes() == body
    assert json.loads(Path(str(out) + ".json").read_text())["size"] == len(body)
    assert not list(out.parent.glob("*.partial*"))


# ------------------------------------------------------------------------------------------ weights
# case -> (how the server answers, words of the one-line error; None: the first run already succeeds)
WEIGHT_CASES = {
    "html": ("html", ["HTML page", "after 2 attempts"]),
    "short": ("short", [f"closed after {len(PCA_BYTES) // 2} of {len(PCA_BYTES)} bytes", "the next run resumes it"]),
    "busy_long": ("busy:3600", ["HTTP 503", "retry after 3600 s", "run again later"]),
    "stall": ("stall", ["timed out"]),
    "trickle": ("trickle", ["below the minimum of 100"]),
    # a well-formed .npz that is not VGGish's PCA file: refused at fetch, not at extraction
    "keys": ("good", ["not the pca file of backbone 'vggish'", "expected arrays 'pca_eigen_vectors' and 'pca_means'",
                      "discarded"]),
    # partials left by an earlier run: a 416 that calls 28 bytes of junk the whole file, a 206 from byte 0, a partial
    # of another URL: none becomes part of the file
    "c416": ("416", ["not an .npz file", "discarded"]),
    "range0": ("range0", None),
    "stale": ("good", None),
    "busy_short": ("busy:1", None),  # retried within the run, after the Retry-After
}
PARTIALS = {"c416": b"x" * 28, "range0": PCA_BYTES[:3000], "stale": b"x" * 28}


def _weights_target(case: str) -> str:
    return f"resources/weights/{case}/audio/{PCA}"


def test_fetch_weights_rule_refuses_each_bad_answer_then_recovers(tmp_path):
    served = {**SERVED, **{f"/{case}/{PCA}": PCA_BYTES for case in WEIGHT_CASES}, f"/keys/{PCA}": _npz(w=np.zeros(3))}
    targets = [_weights_target(case) for case in WEIGHT_CASES]
    with serve_hostile(served) as (srv, base):
        wd = workdir_with(tmp_path / "wd", _weights_config(base, WEIGHT_CASES, timeout=1, min_rate=100,
                                                            rate_window=2, retry_after_cap=5))
        for case, junk in PARTIALS.items():
            partial = wd / (_weights_target(case) + ".partial")
            partial.parent.mkdir(parents=True)
            partial.write_bytes(junk)
            url = f"{base}/{case}/{PCA}" if case != "stale" else f"{base}/old.npz"
            Path(str(partial) + ".json").write_text(json.dumps({"url": url, "validator": ETAG}))
        srv.modes = {f"/{case}/{PCA}": mode for case, (mode, _) in WEIGHT_CASES.items()}
        srv.claimed_size = 28
        t0 = time.monotonic()
        proc = snakemake(wd, "--keep-going", *targets, check=False)
        print(f"first run (every case at once, --cores 2): {time.monotonic() - t0:.1f} s")
        for case, (_, words) in WEIGHT_CASES.items():
            target = _weights_target(case)
            if words is None:
                _fetched(wd, target, PCA_BYTES)
                continue
            line = _failed_line(wd, proc, f"logs/fetch_weights/{case}/audio/{PCA}.log", "fetch",
                                f"/{case}/{PCA}", *words)
            print(f"{case}: {line}")
            _nothing_final(wd / target)
        assert not (wd / (_weights_target("c416") + ".partial")).exists()
        busy = [e[0] for e in srv.log if e[1] == f"/busy_short/{PCA}"]
        assert len(busy) == 2 and busy[1] - busy[0] >= 0.9
        srv.log = []
        srv.modes, srv.files[f"/keys/{PCA}"] = {}, PCA_BYTES  # the server fixed
        snakemake(wd, *targets)
    for case in WEIGHT_CASES:
        _fetched(wd, _weights_target(case), PCA_BYTES)
    resumed = {e[1].split("/")[1] for e in srv.log if e[2]}
    assert {"short", "trickle"} <= resumed  # what came before was kept and resumed


# ------------------------------------------------------------------------------------------ archives
def test_fetch_ucf_archive_rule_cut_halfway_then_fetched_again(tmp_path):
    modes = {"ucf_cut": ("cut", ["not an archive (it does not list"]),
             "ucf_short": ("short", ["closed after", "resumes it"])}
    with serve_hostile({f"/{name}/UCF101.zip": FILES["/UCF101.zip"] for name in modes}) as (srv, base):
        wd = workdir_with(tmp_path / "wd", _archive_config({name: f"{base}/{name}/UCF101.zip" for name in modes}))
        srv.modes = {f"/{name}/UCF101.zip": mode for name, (mode, _) in modes.items()}
        targets = [f"resources/{name}/archive/UCF101.zip" for name in modes]
        proc = snakemake(wd, "--keep-going", *targets, check=False)
        for name, (_, words) in modes.items():
            _failed_line(wd, proc, f"logs/fetch_ucf_archive/{name}/UCF101.zip.log", "fetch",
                         f"/{name}/UCF101.zip", *words)
            _nothing_final(wd / f"resources/{name}/archive/UCF101.zip")
        srv.modes = {}
        snakemake(wd, *targets)
    for target in targets:
        _fetched(wd, target, FILES["/UCF101.zip"])


HOSTILE = {
    "ucf_dotdot": ([("UCF-101/Archery/../../../../escaped.avi",)], ["'..'"]),
    "ucf_sym": ([("UCF-101/Archery/v_Archery_g09_c01.avi", "sym", "/etc/passwd")], ["link"]),
    "ucf_hard": ([("UCF-101/Archery/v_Archery_g09_c01.avi", "hard", "/etc/passwd")], ["link"]),
}


def _paths(root: Path) -> set[str]:
    return {str(Path(d) / n) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar is needed (libarchive-tools)")
def test_ucf_archive_rule_refuses_hostile_archives_and_writes_nothing_outside(tmp_path):
    archives = {}
    for name, (members, _) in HOSTILE.items():
        (tmp_path / name).mkdir()
        archives[name] = _tar(tmp_path / name / "UCF101.tar", [(n,) for n in GOOD] + members)
    wd = workdir_with(tmp_path / "wd", _archive_config({k: str(v) for k, v in archives.items()}))
    targets = [f"resources/{name}/manifest.csv" for name in HOSTILE]
    before = _paths(tmp_path)
    proc = snakemake(wd, "--keep-going", *targets, check=False)
    allowed = (str(wd / "logs"), str(wd / ".snakemake"), *(str(wd / "resources" / n / "videos") for n in HOSTILE))
    parents = {str(wd / "resources"), *(str(wd / "resources" / n) for n in HOSTILE)}
    new = {p for p in _paths(tmp_path) - before if p not in parents and not p.startswith(allowed)}
    assert not new, sorted(new)  # `find` before and after: nothing outside the output folders
    for name, (_, words) in HOSTILE.items():
        _failed_line(wd, proc, f"logs/ucf_archive/{name}.log", "ucf-archive", *words)
        assert not (wd / "resources" / name / "manifest.csv").exists()
    assert not (tmp_path / "escaped.avi").exists()
    for archive in archives.values():  # the archives fixed: the next plain run extracts them
        _tar(archive, [(n,) for n in GOOD])
    snakemake(wd, *targets)
    for name in HOSTILE:
        listed = (wd / "resources" / name / "manifest.csv").read_text()
        assert all(Path(n).stem in listed for n in GOOD) and "g09" not in listed
