"""GPUs by id on one machine: a job that asks for k GPUs gets k devices no concurrent job holds.

Snakemake counts the ``gpu`` resource (``--resources gpu=N``) but never says *which* GPU a job should use, so two
jobs with ``gpu=1`` both see every device and both pick ``cuda:0``. Here each device id of the machine has a lock
file in a pool folder; a job takes an exclusive ``flock`` on k of them, keeps the files open for its lifetime and
sets ``CUDA_VISIBLE_DEVICES`` to their ids before torch initialises CUDA. The kernel releases a flock when its
process ends, however it ends: a crashed or killed job's devices return to the pool by themselves.

Where the device ids come from, first that is set:

* ``AVZSL_GPU_IDS="0,1,..."`` (override, or a fake list for tests)
* ``CUDA_VISIBLE_DEVICES`` of the environment (the pool hands out only these)
* ``nvidia-smi -L``
* none: every job runs on the CPU (``CUDA_VISIBLE_DEVICES=""``).

The pool folder is ``AVZSL_GPU_POOL_DIR``, else ``<system temp>/avzsl-gpu-pool-<uid>``: one per machine and user,
shared by every workflow that user runs there. Inside a SLURM job (``SLURM_JOB_ID`` set) the folder is one per SLURM
job (``...-slurm<job id>``) and the ids are the job's ``CUDA_VISIBLE_DEVICES``: a job submitted by the SLURM
executor gets exactly the GPUs SLURM gave it, and a local Snakemake inside an allocation (``salloc``) shares the
allocation's GPUs out among its jobs, while another job's ids (SLURM may number every job's GPUs from 0) never
meet it in one pool.

A job with ``gpu=0`` gets ``CUDA_VISIBLE_DEVICES=""``: it cannot touch a GPU another job holds.

    python -m avzsl.gpu_pool 1 -- python train.py ...   # a command with one GPU of the pool
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

IDS_ENV = "AVZSL_GPU_IDS"
POOL_DIR_ENV = "AVZSL_GPU_POOL_DIR"
POLL_SECONDS = 0.2


def device_ids() -> list[str]:
    """The machine's GPU ids the pool hands out (see the module's docstring for the order of sources)."""
    for var in (IDS_ENV, "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(var)
        if value is not None:
            return [i.strip() for i in value.split(",") if i.strip() and i.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return re.findall(r"^GPU (\d+):", out, re.M)


def pool_dir() -> Path:
    if os.environ.get(POOL_DIR_ENV):
        return Path(os.environ[POOL_DIR_ENV])
    name = f"avzsl-gpu-pool-{os.getuid()}"
    if os.environ.get("SLURM_JOB_ID"):
        name += f"-slurm{os.environ['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


def _lock_path(directory: Path, device: str) -> Path:
    return directory / f"gpu{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"  # ids may be UUIDs or MIG names


@dataclass
class Lease:
    """Devices held by this process: the open, flocked lock files. Released by :meth:`release` or by the end of
    the process."""

    ids: list[str]
    files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for f in self.files:
            try:
                fcntl.flock(f, fcntl.LOCK_UN)
            finally:
                f.close()
        self.files = []

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(path: Path):
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")  # who holds it, for a person looking at the pool
    f.flush()
    return f


def acquire(k: int, ids: list[str] | None = None, directory: Path | None = None,
            timeout: float | None = None) -> Lease:
    """Block until k devices of the pool are free, lock them and return the lease (ids sorted as in the pool).

    All or nothing: if fewer than k are free, the ones taken are let go and the job waits, so two jobs that each
    need two of the same devices never hold one each for ever."""
    ids = device_ids() if ids is None else ids
    if k < 0:
        raise ValueError(f"a job cannot ask for {k} GPUs")
    if k == 0:
        return Lease([])
    if not ids:
        raise ValueError(f"the job asks for {k} GPU(s) but this machine has none (no {IDS_ENV}, "
                         "CUDA_VISIBLE_DEVICES or nvidia-smi)")
    if k > len(ids):
        raise ValueError(f"the job asks for {k} GPUs but the pool has {len(ids)} ({','.join(ids)})")
    directory = pool_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    waited = False
    while True:
        held = []
        for i in ids:
            f = _try_lock(_lock_path(directory, i))
            if f is not None:
                held.append((i, f))
                if len(held) == k:
                    return Lease([i for i, _ in held], [f for _, f in held])
        for _, f in held:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no {k} free GPU(s) of {','.join(ids)} in {directory} within {timeout} s")
        if not waited:
            log.info("waiting for %d free GPU(s) of %s (pool %s)", k, ",".join(ids), directory)
            waited = True
        time.sleep(POLL_SECONDS)


_held: Lease | None = None  # the lease of this process's job, kept open until the process ends


def assign(k: int) -> list[str]:
    """For a job's entry point, before torch touches CUDA: hold k devices for the rest of the process and point
    ``CUDA_VISIBLE_DEVICES`` at them. Returns the ids.

    A job that asks for GPUs on a machine without any runs on the CPU, with a warning (the rule's resource is a
    request, the configuration's ``device: auto`` then picks the CPU)."""
    global _held
    ids = device_ids()
    if k > 0 and not ids:
        log.warning("the job asks for %d GPU(s) but this machine has none: running on the CPU", k)
        k = 0
    if _held is not None:
        _held.release()
    _held = acquire(k, ids)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_held.ids)
    if _held.ids:
        log.info("GPU(s) %s of %s held for this job (pool %s)", ",".join(_held.ids), ",".join(ids), pool_dir())
    return _held.ids


def main(argv: list[str] | None = None) -> int:
    """``python -m avzsl.gpu_pool K -- COMMAND ...``: run COMMAND with K devices of the pool."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: python -m avzsl.gpu_pool K -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    assign(int(argv[0]))
    for f in _held.files if _held else []:
        os.set_inheritable(f.fileno(), True)  # the command keeps the locks: same open file descriptions
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    sys.exit(main())
