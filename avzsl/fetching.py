"""Reading a source that may be a local path, a file:// URL or an http(s) URL, and retrying what a server may answer
better next time. Every HTTP fetch of the project (weights, official split files, annotations, vocabularies) goes
through here; video downloads go through yt-dlp, whose retries `extractors/sources/download.py` drives with
:func:`backoff_seconds`.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class FetchError(OSError):
    """A source could not be read; ``transient`` says whether trying again later may succeed."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


def backoff_seconds(attempt: int, first: float, most: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): ``first``, doubled each time, capped at ``most``."""
    wait = first * 2 ** attempt
    return wait if most is None else min(most, wait)


def describe(url: str, exc: BaseException) -> FetchError:
    """The error for a failed request: HTTP 5xx and 429 answers and network errors are transient, other answers not."""
    if isinstance(exc, urllib.error.HTTPError):
        return FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}", exc.code >= 500 or exc.code == 429)
    return FetchError(f"cannot download {url}: {getattr(exc, 'reason', exc)}", True)


def with_retries(call: Callable[[], T], retries: int, backoff: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, tried again up to ``retries`` times while it raises a transient :class:`FetchError`."""
    for attempt in range(retries + 1):
        try:
            return call()
        except FetchError as e:
            if attempt == retries or not e.transient:
                if retries and e.transient:
                    raise FetchError(f"{e} (after {retries + 1} attempts)", True) from None
                raise
            sleep(backoff_seconds(attempt, backoff))
    raise AssertionError("unreachable")


def http_get(url: str, timeout: float = 60, retries: int = 3, backoff: float = 1.0,
             opener: Callable | None = None) -> bytes:
    """The body of ``url``, with retries on transient failures (``backoff`` seconds, doubled each time)."""
    opener = opener or urllib.request.urlopen

    def once() -> bytes:
        try:
            with opener(url, timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError) as e:
            raise describe(url, e) from None

    return with_retries(once, retries, backoff)


def local_path(source: str | Path) -> Path | None:
    """The file a source names (a plain path or a file:// URL), or None for an http(s) URL."""
    text = str(source)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(text)


def read_bytes(source: str | Path, what: str, timeout: float = 60, retries: int = 3,
               opener: Callable | None = None) -> bytes:
    """The content of a local path, a file:// URL or an http(s) URL; ``what`` names it in the not-found message."""
    path = local_path(source)
    if path is None:
        return http_get(str(source), timeout=timeout, retries=retries, opener=opener)
    if not path.is_file():
        raise FetchError(f"{what} not found: {path}", transient=False)
    return path.read_bytes()
