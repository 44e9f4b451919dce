"""Recovery that recovers (issue 25, item 7): what a killed job, a changed local folder, media that fail extraction
and a quarantined store leave behind is taken care of by the next plain run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from avzsl import common
from training import run_dir

# ------------------------------------------------------------------------------ (d) temporaries of a killed job

_KILLED_WRITER = """
import sys, time
from avzsl.common import atomic_path
with atomic_path(sys.argv[1], suffix=".pt") as tmp:
    print(tmp, flush=True)
    time.sleep(600)
"""


def _killed_writer_temporary(target: Path) -> Path:
    """A writer of ``target`` killed with SIGKILL inside atomic_path: its temporary stays behind."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    tmp = Path(proc.stdout.readline().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert tmp.exists() and tmp.stat().st_size == 0 and tmp.parent == target.parent
    return tmp


def test_killed_training_job_temporary_checkpoint_is_removed_by_the_next_save(tmp_path):
    stage = tmp_path / "stage1"
    stage.mkdir()
    left = _killed_writer_temporary(stage / run_dir.CHECKPOINT)
    # a temporary of an older version (no pid in its name), last written before this process started
    legacy = stage / f".{run_dir.CHECKPOINT}.abcd_123.pt"
    legacy.write_bytes(b"")
    os.utime(legacy, (common._PROCESS_START - 60, common._PROCESS_START - 60))
    # left alone: a live writer's temporary (this process), another target's, and a recent pid-less one
    live = stage / f".{run_dir.CHECKPOINT}.{common._HOST}.{os.getpid()}.zzzzzzzz.pt"
    live.write_bytes(b"")
    other = stage / f".model.pt.{common._HOST}.999999999.abcdefgh.pt"
    other.write_bytes(b"")
    recent = stage / f".{run_dir.CHECKPOINT}.recent_1.pt"
    recent.write_bytes(b"")

    run_dir.save_checkpoint(stage, {"epoch": 1})

    assert not left.exists() and not legacy.exists()
    assert live.exists() and other.exists() and recent.exists()
    assert run_dir.load_checkpoint(stage) == {"epoch": 1}


def test_stale_temporary_of_a_json_output_is_removed(tmp_path):
    target = tmp_path / "out" / "meta.json"
    target.parent.mkdir()
    # another host's temporary: its pid cannot be checked; older than this process, it is stale
    foreign = target.parent / ".meta.json.otherhost.12.abcdefgh.tmp"
    foreign.write_text("{")
    os.utime(foreign, (time.time() - 3600 - (time.time() - common._PROCESS_START),) * 2)
    common.write_json_atomic(target, {"a": 1})
    assert not foreign.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["meta.json"]


# ------------------------------------------------------------------------------ (b) a local folder's contents


def _local_workdir(tmp_path: Path) -> Path:
    import shutil

    import yaml

    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    shutil.copy(REPO / "config" / "leakage_overrides.csv", tmp_path / "config" / "leakage_overrides.csv")
    for c in ("Archery", "Bowling", "Drumming", "Knitting"):
        for k in range(3):
            f = tmp_path / "videos" / c / "sub" / f"{c}_{k}.mp4"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"x" * k)  # scanned, never decoded here
    cfg = {"active_datasets": ["loc"],
           "datasets": {"loc": {"source": "local", "feature_sets": ["handcrafted"], "local": {"root": "videos"},
                                "splits": {"n_val_unseen": 1, "n_test_unseen": 1}}},
           "models": ["avca"]}
    (tmp_path / "loc.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _scan(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "1",
           "resources/loc/manifest.csv", *args, "--configfile", "loc.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300, env=_env())


def _env() -> dict:
    """The jobs' ``python`` is this interpreter, and the code is this checkout's."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(REPO)}


def test_local_folder_contents_digest(tmp_path):
    from extractors.sources.local import contents_digest

    root = _local_workdir(tmp_path) / "videos"
    first = contents_digest(root)
    assert len(first) == 16 and contents_digest(root) == first
    (root / "notes.txt").write_text("not a video, not in a class folder")
    (root / "Archery" / "readme.md").write_text("not a video")
    assert contents_digest(root) == first
    clip = root / "Bowling" / "sub" / "Bowling_1.mp4"
    clip.write_bytes(b"y")  # same size, another mtime: replaced
    os.utime(clip, ns=(1_000_000_000, 1_000_000_000))
    replaced = contents_digest(root)
    assert replaced != first
    clip.write_bytes(b"yy")
    os.utime(clip, ns=(1_000_000_000, 1_000_000_000))  # same mtime, another size
    assert contents_digest(root) != replaced
    clip.unlink()
    assert contents_digest(root) not in {first, replaced}
    assert contents_digest(tmp_path / "absent") == "missing"


@pytest.mark.slow
def test_removing_a_file_from_a_local_folder_reruns_the_scan(tmp_path):
    """Snakemake watches only the folder's path: without the digest parameter the removal went unnoticed."""
    from test_workflow import planned_jobs

    wd = _local_workdir(tmp_path)
    r = _scan(wd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (wd / "resources/loc/manifest.csv").read_text().count("Bowling_2") == 3  # id, path and group
    r = _scan(wd, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]

    (wd / "videos" / "Bowling" / "sub" / "Bowling_2.mp4").unlink()  # a bad file removed by the user
    r = _scan(wd, "-n")
    assert r.returncode == 0, r.stderr[-3000:]
    assert planned_jobs(r.stdout) == {"scan_local_folder": 1}, r.stdout[-2000:]
    assert "params" in (r.stdout + r.stderr).lower()  # the reason Snakemake gives: the parameter changed
    r = _scan(wd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Bowling_2" not in (wd / "resources/loc/manifest.csv").read_text()
