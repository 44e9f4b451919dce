"""GPUs by id (avzsl/gpu_pool.py): concurrent jobs never share a device, a killed job's device returns to the
pool. No GPU needed: AVZSL_GPU_IDS fakes the machine's device list."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import combinations
from pathlib import Path

import pytest
from conftest import REPO

from avzsl import gpu_pool

# a fake job: takes k devices the way the pipeline's jobs do (avzsl --gpus calls assign), records what it
# was given and when it held it, then ends (the kernel releases its locks)
JOB = textwrap.dedent("""
    import json, os, sys, time
    from avzsl.gpu_pool import assign
    ids = assign(int(sys.argv[1]))
    t0 = time.time()
    time.sleep(float(sys.argv[2]))
    print(json.dumps({"cvd": os.environ["CUDA_VISIBLE_DEVICES"], "ids": ids, "t0": t0, "t1": time.time()}))
""")


@pytest.fixture
def pool_env(tmp_path, monkeypatch):
    """Two fake devices, a pool folder of this test's own."""
    env = {**os.environ, "AVZSL_GPU_IDS": "0,1", "AVZSL_GPU_POOL_DIR": str(tmp_path / "pool"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("SLURM_JOB_ID", None)
    for k in ("AVZSL_GPU_IDS", "AVZSL_GPU_POOL_DIR"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return env


def _jobs(env, k: int, n: int, seconds: float) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", JOB, str(k), str(seconds)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


def test_four_concurrent_one_gpu_jobs_on_two_devices_never_share_one(pool_env):
    records = _jobs(pool_env, k=1, n=4, seconds=0.6)
    for r in records:
        assert len(r["ids"]) == 1 and r["cvd"] == r["ids"][0] and r["cvd"] in {"0", "1"}
    assert {r["cvd"] for r in records} == {"0", "1"}  # both devices used
    for a, b in combinations(records, 2):
        if a["cvd"] == b["cvd"]:  # the same device: one job's hold ends before the other's begins
            assert a["t1"] <= b["t0"] or b["t1"] <= a["t0"], (a, b)
    # never more than two jobs at once: the two others waited for a device
    starts = sorted(r["t0"] for r in records)
    assert starts[2] >= min(r["t1"] for r in records)


def test_a_killed_jobs_device_returns_to_the_pool(pool_env, tmp_path):
    env = {**pool_env, "AVZSL_GPU_IDS": "0"}
    # the wrapper takes the device and execs the command, which keeps the lock: the job is the sleep
    job = subprocess.Popen([sys.executable, "-m", "avzsl.gpu_pool", "1", "--", "sleep", "600"], env=env,
                           stderr=subprocess.PIPE, text=True)
    try:
        lock = Path(env["AVZSL_GPU_POOL_DIR"]) / "gpu0.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and lock.read_text().strip() == str(job.pid)):
            assert time.monotonic() < deadline and job.poll() is None, "the job never took the device"
            time.sleep(0.05)
        with pytest.raises(TimeoutError):  # held: nobody else gets it
            gpu_pool.acquire(1, ["0"], timeout=0.5)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=10)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    with gpu_pool.acquire(1, ["0"], timeout=5) as lease:  # no clean-up ran, yet the device is free
        assert lease.ids == ["0"]


def test_a_two_gpu_job_gets_two_distinct_devices(pool_env):
    [r] = _jobs(pool_env, k=2, n=1, seconds=0)
    assert sorted(r["ids"]) == ["0", "1"] and sorted(r["cvd"].split(",")) == ["0", "1"]


def test_two_gpu_jobs_wait_for_each_other_instead_of_holding_one_device_each(pool_env):
    a, b = _jobs(pool_env, k=2, n=2, seconds=0.4)
    assert a["t1"] <= b["t0"] or b["t1"] <= a["t0"]


def test_a_zero_gpu_job_gets_none_and_sees_no_device(pool_env):
    [r] = _jobs(pool_env, k=0, n=1, seconds=0)
    assert r["ids"] == [] and r["cvd"] == ""


def test_a_job_asking_for_more_gpus_than_the_pool_has_fails_at_once(pool_env):
    with pytest.raises(ValueError, match="asks for 3 GPUs but the pool has 2"):
        gpu_pool.acquire(3)


def test_without_any_gpu_a_gpu_job_runs_on_the_cpu(pool_env, monkeypatch, caplog):
    monkeypatch.setenv("AVZSL_GPU_IDS", "")
    try:
        assert gpu_pool.assign(1) == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
        assert "has none: running on the CPU" in caplog.text
    finally:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_device_ids_from_cuda_visible_devices_then_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.delenv("AVZSL_GPU_IDS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpu_pool.device_ids() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ['PATH']}")
    assert gpu_pool.device_ids() == ["0", "1"]


def test_the_pool_is_one_per_slurm_job_inside_slurm(monkeypatch):
    monkeypatch.delenv("AVZSL_GPU_POOL_DIR", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    plain = gpu_pool.pool_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert gpu_pool.pool_dir() == plain.with_name(plain.name + "-slurm123")


def test_the_cli_holds_the_devices_before_the_command_runs(pool_env, monkeypatch, capsys):
    """`python -m avzsl --gpus K <command>`, the entry point of the extraction, training and evaluation
    rules."""
    from avzsl.app import cli

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    try:
        cli.main(["--gpus", "2", "resolve", "--model", "ale"])
        assert sorted(os.environ["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]
        with pytest.raises(TimeoutError):  # this process holds both
            gpu_pool.acquire(1, ["0", "1"], timeout=0.3)
    finally:
        gpu_pool._held.release()
    assert json.loads(capsys.readouterr().out)


def test_gpus_auto_is_one_per_job_on_a_gpu_machine_and_none_without(monkeypatch):
    from avzsl.app.workflow_config import resolve_gpus

    def resolved(ids, extract="auto", training="auto"):
        monkeypatch.setenv("AVZSL_GPU_IDS", ids)
        cfg = {"extract": {"gpus": extract}, "training": {"gpus": training}}
        resolve_gpus(cfg)
        return cfg["extract"]["gpus"], cfg["training"]["gpus"]

    assert resolved("0,1") == (1, 1)
    assert resolved("") == (0, 0)
    assert resolved("0,1", extract=2, training=0) == (2, 0)  # a number is kept
