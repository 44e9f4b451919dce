"""Reading a source that may be a local path, a file:// URL or an http(s) URL, and retrying what a server may answer
better next time. Every HTTP fetch of the project (weights, official split files, annotations, vocabularies) goes
through here; video downloads go through yt-dlp, whose retries `extractors/sources/download.py` drives with
:func:`backoff_seconds`.

A body counts as read only when it is whole: as long as its ``Content-Length`` (a shorter one is a transient
failure), not an HTML page where a file was asked for, and read within the limits of a :class:`Limits`: a timeout per
socket read, a minimum rate averaged over a window (a trickling server is stopped) and an optional overall deadline.
``Retry-After`` on a 429/503 answer sets the wait before the next try, up to a cap.
"""

from __future__ import annotations

import email.utils
import http.client
import io
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")
CHUNK = 1 << 16


class FetchError(OSError):
    """A source could not be read; ``transient`` says whether trying again later may succeed; ``retry_after``: the
    seconds the server asked to wait (``Retry-After``), if it did."""

    def __init__(self, message: str, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """How long an HTTP fetch may take. ``timeout``: seconds one connect or socket read may wait; ``min_rate``: bytes
    per second, averaged over the last ``rate_window`` seconds, below which a body is abandoned (0: no minimum);
    ``deadline``: seconds the whole fetch (every try and wait) may take (None: no limit); ``retry_after_cap``: the
    longest ``Retry-After`` honoured (a longer one stops the fetch)."""

    timeout: float = 60
    min_rate: float = 10_000
    rate_window: float = 60
    deadline: float | None = None
    retry_after_cap: float = 300

    def __post_init__(self):
        if self.timeout <= 0 or self.min_rate < 0 or self.rate_window <= 0 or self.retry_after_cap < 0:
            raise ValueError(f"invalid download limits: {self}")
        if self.deadline is not None and self.deadline <= 0:
            raise ValueError(f"the download deadline must be positive seconds, got {self.deadline}")


SMALL_FILE_LIMITS = Limits(deadline=600)  # split files, annotations, vocabularies: 10 min at most
LARGE_FILE_LIMITS = Limits()  # weights and archives: no overall deadline, but a trickle is stopped


class Clock:
    """The deadline of one fetch: ``remaining()`` seconds, None without a deadline."""

    def __init__(self, url: str, limits: Limits, now: Callable[[], float] = time.monotonic):
        self.url, self.limits, self.now = url, limits, now
        self.end = None if limits.deadline is None else now() + limits.deadline

    def remaining(self) -> float | None:
        return None if self.end is None else self.end - self.now()

    def check(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise FetchError(f"cannot download {self.url}: not finished within the deadline of "
                             f"{self.limits.deadline:g} s (raise it with --deadline, or run again to resume)", True)

    def timeout(self) -> float:
        """The socket timeout of the next request: the per-read timeout, or less when the deadline is nearer."""
        left = self.remaining()
        return self.limits.timeout if left is None else max(0.01, min(self.limits.timeout, left))


def backoff_seconds(attempt: int, first: float, most: float | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based): ``first``, doubled each time, capped at ``most``."""
    wait = first * 2 ** attempt
    return wait if most is None else min(most, wait)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def describe(url: str, exc: BaseException) -> FetchError:
    """The error for a failed request: HTTP 5xx and 429 answers and network errors are transient, other answers not;
    a 429/503's ``Retry-After`` is kept."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, urllib.error.HTTPError):
        after = retry_after_seconds(exc.headers.get("Retry-After")) if exc.code in (429, 503) and exc.headers else None
        return FetchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}", exc.code >= 500 or exc.code == 429,
                          after)
    if isinstance(exc, http.client.IncompleteRead):
        return FetchError(f"cannot download {url}: the body ended after {len(exc.partial)} bytes, "
                          f"{exc.expected} more were announced", True)
    if isinstance(exc, http.client.HTTPException):
        return FetchError(f"cannot download {url}: {type(exc).__name__}: {exc}", True)
    return FetchError(f"cannot download {url}: {getattr(exc, 'reason', exc)}", True)


def with_retries(call: Callable[[], T], retries: int, backoff: float, sleep: Callable[[float], None] | None = None,
                 retry_after_cap: float = 300, clock: Clock | None = None) -> T:
    """``call()``, tried again up to ``retries`` times while it raises a transient :class:`FetchError`; the wait is
    the back-off, or the server's ``Retry-After`` when it asks for longer (more than ``retry_after_cap``: no retry)."""
    for attempt in range(retries + 1):
        try:
            if clock is not None:
                clock.check()
            return call()
        except FetchError as e:
            if attempt == retries or not e.transient:
                if retries and e.transient:
                    raise FetchError(f"{e} (after {retries + 1} attempts)", True, e.retry_after) from None
                raise
            wait = backoff_seconds(attempt, backoff)
            if e.retry_after is not None:
                if e.retry_after > retry_after_cap:
                    raise FetchError(f"{e}; the server asks to retry after {e.retry_after:.0f} s, more than the "
                                     f"{retry_after_cap:g} s this run waits: run again later", True,
                                     e.retry_after) from None
                wait = max(wait, e.retry_after)
            left = None if clock is None else clock.remaining()
            if left is not None and wait >= left:
                raise FetchError(f"{e}; no time left for another try within the deadline of "
                                 f"{clock.limits.deadline:g} s", True) from None
            (sleep or time.sleep)(wait)
    raise AssertionError("unreachable")


def _headers(resp):
    return getattr(resp, "headers", None) or {}


def is_html_answer(url: str, resp) -> bool:
    """A 2xx answer that is an HTML page although the URL does not name one (a login or error page, a portal)."""
    kind = (_headers(resp).get("Content-Type") or "").split(";")[0].strip().lower()
    name = urllib.parse.urlparse(url).path.lower()
    return kind in ("text/html", "application/xhtml+xml") and not name.endswith((".html", ".htm", ".xhtml"))


def html_error(url: str) -> FetchError:
    return FetchError(f"cannot download {url}: the server answered with an HTML page instead of the file (a login, "
                      "error or quota page?); nothing was kept; check the url, or run again later", True)


def content_length(resp) -> int | None:
    value = _headers(resp).get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def copy_body(url: str, resp, out: BinaryIO, limits: Limits, clock: Clock | None = None,
              now: Callable[[], float] = time.monotonic) -> int:
    """Copy the body of ``resp`` to ``out`` and return its length, stopping (transient :class:`FetchError`) when the
    rate over the last ``limits.rate_window`` seconds falls below ``limits.min_rate`` or the deadline passes; a body
    shorter than its ``Content-Length`` is a transient failure too (what was written is still a valid prefix)."""
    expected = content_length(resp)
    read = getattr(resp, "read1", resp.read)
    start = now()
    seen: deque[tuple[float, int]] = deque([(start, 0)])
    total = 0
    try:
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            total += len(chunk)
            t = now()
            seen.append((t, total))
            if clock is not None:
                clock.check()
            if limits.min_rate and t - start >= limits.rate_window:
                while len(seen) > 1 and seen[1][0] <= t - limits.rate_window:
                    seen.popleft()
                t0, n0 = seen[0]
                rate = (total - n0) / max(t - t0, 1e-9)
                if rate < limits.min_rate:
                    raise FetchError(f"cannot download {url}: {rate:.0f} bytes/s over the last {t - t0:.0f} s, below "
                                     f"the minimum of {limits.min_rate:g} (--min-rate); stopped after {total} bytes "
                                     f"in {t - start:.1f} s; run again later", True)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException) as e:
        raise describe(url, e) from None
    if expected is not None and total != expected:
        raise FetchError(f"cannot download {url}: the connection closed after {total} of {expected} bytes", True)
    return total


def http_get(url: str, timeout: float = 60, retries: int = 3, backoff: float = 1.0,
             opener: Callable | None = None, limits: Limits | None = None,
             sleep: Callable[[float], None] | None = None) -> bytes:
    """The whole body of ``url``, with retries on transient failures (``backoff`` seconds, doubled each time, or what
    ``Retry-After`` asks): network errors, 5xx/429, a body shorter than its Content-Length, an HTML page, a
    trickle below ``limits.min_rate``. ``limits`` default: :data:`SMALL_FILE_LIMITS` with ``timeout``."""
    opener = opener or urllib.request.urlopen
    if limits is None:
        limits = Limits(timeout=timeout, min_rate=SMALL_FILE_LIMITS.min_rate,
                        rate_window=SMALL_FILE_LIMITS.rate_window, deadline=SMALL_FILE_LIMITS.deadline)
    clock = Clock(url, limits)

    def once() -> bytes:
        try:
            with opener(url, timeout=clock.timeout()) as resp:
                if is_html_answer(url, resp):
                    raise html_error(url)
                buf = io.BytesIO()
                copy_body(url, resp, buf, limits, clock)
                return buf.getvalue()
        except FetchError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise describe(url, e) from None

    return with_retries(once, retries, backoff, sleep, limits.retry_after_cap, clock)


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
               opener: Callable | None = None, limits: Limits | None = None) -> bytes:
    """The content of a local path, a file:// URL or an http(s) URL; ``what`` names it in the not-found message."""
    path = local_path(source)
    if path is None:
        return http_get(str(source), timeout=timeout, retries=retries, opener=opener, limits=limits)
    if not path.is_file():
        raise FetchError(f"{what} not found: {path}", transient=False)
    return path.read_bytes()
