"""Recovery that recovers (issue 25, item 7): what a killed job, a changed local folder, media that fail extraction
and a quarantined store leave behind is taken care of by the next plain run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
