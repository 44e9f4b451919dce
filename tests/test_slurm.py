"""profiles/slurm against a real SLURM: a single-host cluster (munged, slurmctld, slurmd with two fake GPUs) started
by the test, the demo DAG run through snakemake-executor-plugin-slurm to the results table.

Skips, with the reason, where SLURM (Debian: munge slurmctld slurmd slurm-client), root or the plugin is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_DEMO_CONFIG, TINY_TRAINING
from slurm_cluster import FAKE_GPU_TYPE, LocalSlurm, missing

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _why_not() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')"
    return missing()


WHY_NOT = _why_not()
GPU_RULES = ("extract_shard", "train_stage1", "train_stage2", "evaluate")

# the demo, smaller: two models, one seed, fewer clips
CONFIG = {
    **TINY_DEMO_CONFIG,
    "models": ["ale", "avca"],
    "seeds": [42],
    "training": {"device": "cpu", "mem_mb": 2000, "overrides": {"train": TINY_TRAINING}},
}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    with LocalSlurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def test_profile_sets_no_option_the_plugin_refuses():
    """The plugin rejects --gres, --gpus and --mem in slurm_extra; GPUs and memory are standard resources."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    every = [profile.get("default-resources") or {}, *(profile.get("set-resources") or {}).values()]
    assert not any("slurm_extra" in r for r in every)
    for rule in GPU_RULES:
        assert profile["set-resources"][rule]["gpu"] == 1
    assert profile["resources"]["download_slots"] >= 1 and profile["retries"] >= 1


def _test_profile(root: Path, partition: str) -> Path:
    """profiles/slurm as shipped, with this cluster's partition, GPU type and CPUs, without conda (the test's
    interpreter has every package) and with short status intervals."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile.pop("software-deployment-method", None)
    for r in [profile["default-resources"], *profile["set-resources"].values()]:
        if "slurm_partition" in r:
            r["slurm_partition"] = partition
    for rule in GPU_RULES:
        profile["set-resources"][rule]["gpu_model"] = FAKE_GPU_TYPE
    profile["set-threads"] = {"extract_shard": 1}  # this node has 2 CPUs, not the 8 of a cluster's node
    profile.update({"latency-wait": 10, "slurm-init-seconds-before-status-checks": 2, "slurm-no-account": True,
                    # no slurmdbd here, so plain sacct has nothing; MinJobAge keeps finished jobs in squeue
                    "slurm-status-command": "squeue",
                    "slurm-keep-successful-logs": True, "verbose": True})
    folder = root / "profile"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def test_demo_dag_runs_through_the_slurm_executor(slurm, tmp_path):
    wd = tmp_path / "work"
    (wd / "config").mkdir(parents=True)
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    profile = _test_profile(tmp_path, slurm.partition)
    env = {**slurm.env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    started = time.monotonic()
    # --workflow-profile replaces profiles/default (which would otherwise be applied over the SLURM profile)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           "--workflow-profile", str(profile)], cwd=wd, env=env, capture_output=True, text=True,
                          timeout=900)
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    (tmp_path / "snakemake.log").write_text(out)
    assert proc.returncode == 0, f"{out[-6000:]}\n{slurm.logs()}"
    print(f"demo DAG through SLURM in {elapsed:.0f} s")

    md = (wd / "results" / "summary.md").read_text()
    assert "| ALE |" in md and "| AVCA |" in md

    # every rule that ran, ran as a SLURM job: squeue (MinJobAge keeps finished jobs) and sacct's job completion
    # records (no slurmdbd: jobcomp/filetxt) both list them
    squeue = slurm.run("squeue", "-h", "-t", "all", "-o", "%i %j %T %k")
    sacct = slurm.run("sacct", "--completion", "-X", "-n", "-P", "-o", "JobID,JobName,State,Timelimit")
    print("squeue:\n" + squeue + "\nsacct --completion:\n" + sacct)
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) >= 12, out[-3000:]
    by_id = {line.split("|")[0]: line.split("|") for line in sacct.splitlines() if line.strip()}
    queue = {line.split()[0]: line.split() for line in squeue.splitlines() if line.strip()}
    for job in submitted:
        assert by_id[job][2] == "COMPLETED", by_id.get(job)
        assert queue[job][2] == "COMPLETED", queue.get(job)
    rules = " ".join(line[3] for line in queue.values())
    for rule in ("demo_videos", "extract_shard", "merge_features", "train_stage1", "train_stage2", "evaluate",
                 "summary"):
        assert f"rule_{rule}" in rules

    # an sbatch line: the rule's standard resources mapped by the plugin
    calls = re.findall(r"sbatch call: (sbatch .*)", out)
    train = next(c for c in calls if "rule_train_stage1" in c)
    print("sbatch line of a training job:\n" + train.split(" --wrap=")[0])
    assert re.search(r" --mem 2000\b", train) and re.search(r" -t 600\b", train)
    assert f" --gpus={FAKE_GPU_TYPE}:1" in train and f"-p {slurm.partition}" in train
    assert "--gres" not in train
    # and what SLURM made of it: the time limit, the memory and the GPU of the job
    job = next(j for j in submitted if queue[j][3].startswith("rule_train_stage1"))
    shown = slurm.run("scontrol", "show", "job", "-o", job)
    print("scontrol show job: " + " ".join(re.findall(r"(?:TimeLimit|TRES|TresPerJob|MinMemoryNode)=\S+", shown)))
    assert "TimeLimit=10:00:00" in shown and "mem=2000M" in shown, shown
    assert f"TresPerJob=gres:gpu:{FAKE_GPU_TYPE}:1" in shown, shown  # sbatch --gpus=fake:1
    assert by_id[job][3] == "600"  # sacct --completion: the job's time limit in minutes
    cpu_job = next(j for j in submitted if queue[j][3].startswith("rule_merge_features"))
    assert "gpu" not in slurm.run("scontrol", "show", "job", "-o", cpu_job)
