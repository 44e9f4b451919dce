"""Small I/O helpers shared by every stage: atomic writes, hashing and code provenance."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place only if the block succeeds.

    Readers never see a half-written file and an interrupted job leaves nothing at ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``git describe`` of the checkout the code runs from (``-dirty`` when modified), else the package version."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
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
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
