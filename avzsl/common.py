"""What both stages (extractors/ and training/) share: atomic writes with the umask's permissions, content digests
and hashes, quarantining damaged files, and code provenance (git SHA, code version)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when the code runs from one
_PROCESS_START = time.time()  # this module is imported as the process starts: anything older predates the process
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Readers never see a half-written file and an interrupted job leaves nothing at ``path``. The temporary is named
    ``.<name>.<host>.<pid>.<random><suffix>``; a job killed outright (SIGKILL, out of memory, a node lost) cannot
    remove it, so the next write of the same target removes the temporaries of writers that are gone
    (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or ".tmp"
    remove_stale_temporaries(path, suffix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; a finished output gets what the user's umask gives any new file, so that
        # collaborators on a shared filesystem can read results
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporaries :func:`atomic_path` left next to ``path`` whose writer is no longer alive; return them.

    A temporary is stale when its writer ran on this host and its pid is dead, or (another host's, whose pid cannot
    be checked, and temporaries of older versions, which carry no pid) when it was last written before this process
    started: Snakemake never runs two jobs for one output at once, so such a writer is not writing any more. A
    temporary of a live writer (this process's included) is left alone.
    """
    path = Path(path)
    new = re.compile(rf"\.{re.escape(path.name)}\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+"
                     rf"{re.escape(suffix)}")
    old = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}{re.escape(suffix)}")  # mkstemp's 8 characters
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = new.fullmatch(entry.name)
        if m is None and old.fullmatch(entry.name) is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if m is not None and m["host"] == _HOST:
                stale = not _pid_alive(int(m["pid"]))
            else:
                stale = entry.stat(follow_symlinks=False).st_mtime < _PROCESS_START
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # gone meanwhile, or not ours to remove: harmless
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


class DamagedFileError(ValueError):
    """A stored artefact failed its integrity check; it has been moved aside so that the next run rebuilds it."""


def quarantine(path: str | os.PathLike, reason: str) -> DamagedFileError:
    """Move a damaged output aside (``<name>.damaged``, never deleted, its modification time set to now) and return
    the error to raise. The workflow gives the aside copy as an input to the store's consumers, so the next plain run
    rebuilds the missing store and re-runs them (workflow/rules/common.smk, ``quarantined_copies``)."""
    path = Path(path)
    aside = path.with_name(path.name + ".damaged")
    try:
        os.replace(path, aside)
        # stamped with the time of the quarantine: the workflow gives the aside copy as an input to the store's
        # consumers (workflow/rules/common.smk, quarantined_copies), so it must be newer than their outputs
        os.utime(aside)
        moved = f"moved it to {aside.name} so that the next run rebuilds it: rerun snakemake (or the command that wrote it)"
    except OSError as e:
        moved = f"could not move it aside ({e.strerror}): delete it and rerun"
    reason = " ".join(str(reason).split())
    return DamagedFileError(f"{path} is damaged ({reason}); {moved}")


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def config_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of a JSON-serialisable configuration."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes: the content identity of an input (cached per path, size and modification time)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path} (rerun snakemake, or the command that writes it)")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


_DIGESTS: dict[tuple, str] = {}
_CODE_VERSION: str | None = None


def code_version() -> str:
    """``git describe`` of the checkout the code runs from (``-dirty`` when modified), else the package version."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        try:
            if not (SOURCE_ROOT / ".git").exists():  # an installed copy: its own version, not a surrounding repo's
                raise OSError("not a checkout")
            out = subprocess.run(
                ["git", "-C", str(SOURCE_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
                capture_output=True, text=True, timeout=10, check=True,
            )
            _CODE_VERSION = "git:" + out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            from importlib.metadata import PackageNotFoundError, version

            try:
                _CODE_VERSION = "avzsl " + version("avzsl")
            except PackageNotFoundError:
                _CODE_VERSION = "unknown"
    return _CODE_VERSION


def git_sha() -> str | None:
    try:
        if not (SOURCE_ROOT / ".git").exists():
            return None
        out = subprocess.run(["git", "-C", str(SOURCE_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def json_arg(text: str) -> dict:
    """A command-line argument holding a JSON object, inline or as a file path."""
    import argparse

    if not text:
        return {}
    p = Path(text)
    if not text.lstrip().startswith("{") and p.exists():
        text = p.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value
