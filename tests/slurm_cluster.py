"""A throw-away single-host SLURM for the tests: munged, slurmctld and slurmd started as processes with a
generated configuration in a temporary folder, stopped by their process ids.

Needs Debian's ``munge slurmctld slurmd slurm-client`` and root (slurmd runs jobs as their user and must be able to
switch to it). No slurmdbd: accounting storage is off, finished jobs are written by ``jobcomp/filetxt`` and
``sacct --completion`` reads them back.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sacct", "sinfo", "scontrol")
FAKE_GPUS = 2
FAKE_GPU_TYPE = "fake"  # the GPU type of the fake GPUs (gpu_model resource: --gpus=fake:1)


def missing() -> str | None:
    """Why this machine cannot run the local SLURM (None: it can)."""
    absent = [b for b in BINARIES if shutil.which(b) is None
              and not Path("/usr/sbin", b).exists()]
    if absent:
        return (f"SLURM is not installed (missing {', '.join(absent)}; Debian: apt-get install munge slurmctld "
                "slurmd slurm-client)")
    if os.geteuid() != 0:
        return "the local SLURM's slurmd must run as root to start jobs"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    """``with LocalSlurm(root) as slurm:``: a running cluster of one node with ``FAKE_GPUS`` fake GPUs in
    partition ``slurm.partition``; ``slurm.env`` points SLURM's commands at it (``SLURM_CONF``)."""

    partition = "avzsl"

    def __init__(self, root: Path, cpus: int | None = None):
        self.root = Path(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        # the executor's job step drops SLURM_* variables (SLURM_CONF too) before its inner srun, so srun would look
        # for /etc/slurm/slurm.conf; a srun first on PATH puts this cluster's configuration back
        self.bin = self.root / "bin"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": os.pathsep.join([str(self.bin), os.environ.get("PATH", "")])}

    # ------------------------------------------------------------------------------------------ configuration
    def _write_config(self) -> None:
        r = self.root
        for d in ("munge", "ctld", "spool", "log", "gpus", "bin"):
            (r / d).mkdir(parents=True, exist_ok=True)
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{shutil.which("srun") or "/usr/bin/srun"}" "$@"\n')
        srun.chmod(0o755)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o600)
        # fake GPU devices: slurmd only needs a file per device to count and hand out (no cgroup device limits)
        gpu_files = []
        for i in range(FAKE_GPUS):
            f = r / "gpus" / f"nvidia{i}"
            f.touch()
            gpu_files.append(str(f))
        self.munge_socket = r / "munge" / "munge.socket.2"
        memory = int(_memory_mb() * 0.9)
        self.conf.write_text("\n".join([
            "ClusterName=avzsl-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'ctld'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/affinity",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            # finished jobs stay visible to squeue for 10 minutes: the executor may read their states from it
            "MinJobAge=600",
            "SchedulerParameters=sched_interval=2",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "GresTypes=gpu",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} "
            f"Gres=gpu:{FAKE_GPU_TYPE}:{FAKE_GPUS} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        (r / "gres.conf").write_text(
            "AutoDetect=off\n"
            + "".join(f"NodeName={self.node} Name=gpu Type={FAKE_GPU_TYPE} File={f}\n" for f in gpu_files))

    # ------------------------------------------------------------------------------------------ daemons
    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.root, start_new_session=True)
        log.close()

    def start(self, timeout: float = 60) -> LocalSlurm:
        self._write_config()
        r = self.root
        self._start("munged", [_binary("munged"), "-F", "--force", f"--key-file={r / 'munge' / 'munge.key'}",
                               f"--socket={self.munge_socket}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged's socket")
        self._start("slurmctld", [_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), timeout, "slurmctld answering scontrol ping")
        self._start("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(lambda: self._ok(["sinfo", "-h", "-N", "-o", "%T"], "idle"), timeout, "the node idle in sinfo")
        return self

    def _ok(self, cmd: list[str], expect: str) -> bool:
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return p.returncode == 0 and expect in p.stdout

    def _wait(self, ready, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons by their process ids, slurmd first (it ends the jobs' steps), munged last."""
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)

    def run(self, *cmd: str) -> str:
        p = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
        return p.stdout

    def __enter__(self) -> LocalSlurm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
