"""Digests locked on first use: the sha256 of every file the project fetches by URL, kept in a lock file the user can
commit, like a package lock (docs/acquisition.md, "The lock file").

The lock file is one JSON file, ``{"version": 1, "files": {<url>: {"sha256", "size", "locked_on", "what"}}}``;
its place: the ``--lock`` option of a command (:func:`use`), else the environment variable ``AVZSL_LOCK``, else
``avzsl.lock.json`` in the working directory (where Snakemake runs). The first fetch of a URL records its digest;
a later fetch of the same URL, on this machine or another with the same lock file, whose digest differs is refused
with one line (:class:`LockError`) unless a digest pinned in the configuration vouches for it (a pinned digest always
wins, and the entry is updated to agree). ``avzsl lock --update <url>`` (:func:`forget`) re-locks deliberately.
Only fetched URLs (http, https) are locked, never local files.

Every read-modify-write holds an exclusive ``fcntl.flock`` on ``<lock file>.lock`` beside it, so that fetch jobs
running in parallel lose no entry; the file itself is replaced atomically. No torch, no third-party import: the
workflow imports :mod:`extractors.weights`, which imports this.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path

from avzsl.common import write_text_atomic

DEFAULT_NAME = "avzsl.lock.json"
ENV = "AVZSL_LOCK"
VERSION = 1
_chosen: str | None = None  # set by a command's --lock


class LockError(ValueError):
    """A fetched file whose digest differs from the locked one, or an unreadable lock file."""


def use(path: str | os.PathLike | None) -> None:
    """Make ``path`` the lock file of this process (a command's ``--lock``); None or "": back to the default."""
    global _chosen
    _chosen = str(path) if path else None


def lock_path(path: str | os.PathLike | None = None) -> Path:
    """The lock file: ``path``, else the one chosen by :func:`use`, else ``$AVZSL_LOCK``, else
    ``./avzsl.lock.json``."""
    return Path(path or _chosen or os.environ.get(ENV) or DEFAULT_NAME)


def is_locked_source(url: str) -> bool:
    """Whether a source is fetched (http, https) and so locked; local paths and file:// URLs are not."""
    return urllib.parse.urlparse(str(url)).scheme in ("http", "https")


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as guard:
        fcntl.flock(guard.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard.fileno(), fcntl.LOCK_UN)


def read(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """The entries of the lock file, ``{url: {"sha256", "size", "locked_on", "what"}}`` (empty when absent)."""
    path = lock_path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise LockError(f"{path}: the lock file does not read as JSON ({e}); fix it, or move it aside to lock "
                        "every file again") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise LockError(f"{path}: not an avzsl lock file (no 'files' mapping of url to sha256); fix it, or move it "
                        "aside to lock every file again")
    return files


def _write(path: Path, files: dict[str, dict]) -> None:
    write_text_atomic(path, json.dumps({"version": VERSION, "files": files}, indent=1, sort_keys=True) + "\n")


def check_data(url: str, data: bytes, what: str, **kw) -> str:
    """:func:`check` for a file fetched into memory: its digest and size from ``data``."""
    return check(url, hashlib.sha256(data).hexdigest(), len(data), what, **kw)


def check(url: str, sha256: str, size: int, what: str, name: str | None = None, pinned: bool = False,
          path: str | os.PathLike | None = None) -> str:
    """Verify a fetched file against the lock and lock it on first use; returns what was done: ``"locked"`` (a new
    entry), ``"verified"`` (the same digest) or ``"updated"`` (``pinned``: the configuration's digest, already
    checked by the caller, replaced a different entry). A different digest without ``pinned``: :class:`LockError`,
    one line naming the file (``name``, default the url), both digests and how to re-lock. Not a fetched url: no-op
    (``"local"``)."""
    if not is_locked_source(url):
        return "local"
    sha256 = sha256.lower()
    path = lock_path(path)
    with _held(path):
        files = read(path)
        entry = files.get(url)
        if entry is not None and entry.get("sha256") == sha256:
            return "verified"
        if entry is not None and not pinned:
            file = f"{name} ({url})" if name else url
            raise LockError(f"{file}: downloaded sha256 {sha256} differs from {entry['sha256']} locked in {path} "
                            f"on {entry.get('locked_on', '?')}; the download was discarded (if the new file is "
                            f"intended, re-lock it with `avzsl lock --update {url}` and fetch again)")
        files[url] = {"sha256": sha256, "size": int(size), "locked_on": datetime.date.today().isoformat(),
                      "what": what}
        _write(path, files)
        return "locked" if entry is None else "updated"


def forget(urls: Iterable[str] = (), every: bool = False, path: str | os.PathLike | None = None) -> list[str]:
    """Remove the entries of ``urls`` (``every``: all) so that the next fetch locks the digest it gets; returns the
    urls removed. A url without an entry: :class:`LockError` (a typo would otherwise re-lock nothing)."""
    path = lock_path(path)
    with _held(path):
        files = read(path)
        urls = sorted(files) if every else list(dict.fromkeys(urls))
        unknown = [u for u in urls if u not in files]
        if unknown:
            raise LockError(f"{path}: no entry for {', '.join(unknown)} ({len(files)} url(s) locked; "
                            "`avzsl lock` lists them)")
        for u in urls:
            del files[u]
        if urls or path.exists():
            _write(path, files)
        return urls
