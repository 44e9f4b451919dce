"""Videos from the web (YouTube or any HTTP server) through yt-dlp's Python API, cut to the listed section, checked.

Input: a *download list* (``video_id,youtube_id,url,start,end,label[,group]``; ``url`` wins over ``youtube_id``,
which fills the configured URL pattern; ``start``/``end`` in seconds, empty = the whole video). Output, beside the
dataset's manifest: ``videos/<video_id>.mp4`` for every clip that could be had, a manifest of those, and
``unavailable.tsv`` (``video_id,reason,kind,attempts``) for the rest. Nothing here raises for a video that cannot
be had: it is recorded and the next one is tried.

Sections: ``sections="pyav"`` downloads the whole video and re-encodes ``[start, end)`` with PyAV (no external
program); ``sections="yt-dlp"`` passes ``download_ranges`` to yt-dlp, which needs the ``ffmpeg`` program and then
fetches only the section; ``auto`` takes yt-dlp's way when ``ffmpeg`` is on PATH.

Errors: HTTP 404/403/410 and YouTube's "unavailable / private / removed" messages are permanent and recorded at
once; anything else (HTTP 5xx and 429, timeouts, a file that does not decode) is retried with exponential back-off
and recorded as ``kind=transient`` when the attempts run out. A body that is not media at all (an HTML or text page
answered with 200, an empty body, yt-dlp's "Unsupported URL" for such a page) is *transient across runs*: tried
once per run, recorded with the number of runs so far in ``videos/<video_id>.failures.json``, retried by the next
run, and permanent only after ``permanent_after_runs`` runs (default 3). Every clip is decoded for its first second
before it counts. A video whose id cannot be a file name fails alone (recorded, nothing written for it). State
survives reruns in ``videos/``: a clip there is kept (and not fetched again); a permanent failure leaves
``videos/<video_id>.unavailable.json``, which a rerun respects unless ``retry_unavailable``.

The list is checked when it is read (``read_download_list``): UTF-8 (a byte-order mark at the start is dropped),
no control or format characters in any field (newline, NUL, a byte-order mark inside the file), finite
non-negative seconds; a bad line stops with one message naming the file and the line. An id too long for a file
name (``<video_id>.mp4`` over ``MAX_NAME_BYTES``) is not a bad list: that video alone is recorded as unavailable.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import math
import os
import shutil
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from avzsl.common import atomic_path, write_json_atomic
from avzsl.fetching import backoff_seconds
from extractors.sources.manifest import ManifestRow, read_manifest, write_class_names, write_manifest

log = logging.getLogger(__name__)

DOWNLOAD_LIST_COLUMNS = ("video_id", "youtube_id", "url", "start", "end", "label", "group")
UNAVAILABLE_COLUMNS = ("video_id", "reason", "kind", "attempts")
DEFAULT_URL_PATTERN = "https://www.youtube.com/watch?v={youtube_id}"
SECTIONS = ("auto", "pyav", "yt-dlp")
CLIP_SUFFIX = ".mp4"
MARKER_SUFFIX = ".unavailable.json"
FAILURES_SUFFIX = ".failures.json"  # runs that got a non-media body, for videos not (yet) permanently unavailable
MAX_NAME_BYTES = 200  # <video_id>.mp4 in UTF-8; the marker names add at most 13 bytes, under every file system's 255
PERMANENT_STATUS = (401, 403, 404, 410, 451)
PERMANENT_TEXT = ("video unavailable", "private video", "this video has been removed", "is not available",
                  "has been terminated", "copyright", "sign in to confirm your age", "video is unavailable")
# what yt-dlp says when the URL answered with a page that holds no media (a login or error page served with 200, a
# captive portal): not media, so counted across runs before it is permanent
NON_MEDIA_TEXT = ("unsupported url", "no video formats found")


class DownloadListError(ValueError):
    pass


@dataclass(frozen=True)
class DownloadRow:
    video_id: str
    label: str
    youtube_id: str = ""
    url: str = ""
    start: float | None = None
    end: float | None = None
    group: str = ""
    problem: str = field(default="", compare=False)  # why the video cannot be fetched at all (e.g. an over-long id)

    def source_url(self, pattern: str) -> str:
        if self.url:
            return self.url
        if not self.youtube_id:
            raise DownloadListError(f"{self.video_id}: neither url nor youtube_id")
        return pattern.format(youtube_id=self.youtube_id, video_id=self.video_id)


def _seconds(text: str, where: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DownloadListError(f"{where}: not a number of seconds: {text!r}; fix the list") from None
    if not math.isfinite(value):
        raise DownloadListError(f"{where}: not a finite number of seconds: {text!r}; fix the list")
    if value < 0:
        raise DownloadListError(f"{where}: negative seconds {value}; fix the list")
    return value


def bad_character(text: str) -> str:
    """The first control or format character of ``text`` (newline, NUL, tab, a byte-order mark, zero-width
    characters...) described for a message, or ``""``."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            name = "a byte-order mark" if ch == "\ufeff" else unicodedata.name(ch, "a control character")
            return f"{ch!r} (U+{ord(ch):04X}, {name.lower()})"
    return ""


def video_id_problem(video_id: str) -> str:
    """Why ``video_id`` cannot name a clip file (``""`` when it can): its length in UTF-8 bytes."""
    n = len(video_id.encode("utf-8", "surrogatepass")) + len(CLIP_SUFFIX)
    if n > MAX_NAME_BYTES:
        return (f"video_id is too long for a file name ({n} bytes with {CLIP_SUFFIX}, at most {MAX_NAME_BYTES}); "
                "shorten it in the list")
    return ""


def read_download_list(path: str | Path) -> list[DownloadRow]:
    """The rows of a download list, checked (see the module's doc); DownloadListError names the file and line."""
    path = Path(path)
    if not path.exists():
        raise DownloadListError(f"download list not found: {path}")
    try:
        return _read_download_list(path)
    except UnicodeDecodeError as e:
        raise DownloadListError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None


def _read_download_list(path: Path) -> list[DownloadRow]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a byte-order mark at the start is dropped
        reader = csv.DictReader(f)
        try:
            fieldnames = reader.fieldnames or []
        except csv.Error as e:
            raise DownloadListError(f"{path}, line 1: {e}; fix the list") from None
        cols = set(fieldnames)
        if not {"video_id", "label"} <= cols or not cols & {"youtube_id", "url"}:
            raise DownloadListError(f"{path}: expected columns video_id, label and youtube_id or url "
                                    f"(optional start, end, group), found {sorted(cols)}")
        for c in fieldnames:
            bad = bad_character(c or "")
            if bad:
                raise DownloadListError(f"{path}, line 1: column name {c!r} contains {bad}; fix the list")
        rows, seen = [], set()
        line = reader.line_num + 1
        while True:
            try:
                r = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise DownloadListError(f"{path}, line {reader.line_num}: {e}; fix the list") from None
            where = f"{path}, line {line}"  # the line where the record starts (a quoted field may span lines)
            line = reader.line_num + 1
            for col in DOWNLOAD_LIST_COLUMNS:
                bad = bad_character(r.get(col) or "")
                if bad:
                    raise DownloadListError(f"{where}: {col} {(r.get(col) or '')[:60]!r} contains {bad}; "
                                            "fix the list")
            vid = (r.get("video_id") or "").strip()
            if not vid or "/" in vid or "\\" in vid or vid.startswith("."):
                raise DownloadListError(f"{where}: bad video_id {vid[:60]!r} (empty, a path or hidden); fix the list")
            if vid in seen:
                raise DownloadListError(f"{where}: video_id {vid[:60]!r} listed twice; fix the list")
            seen.add(vid)
            start, end = _seconds(r.get("start", ""), where), _seconds(r.get("end", ""), where)
            if start is not None and end is not None and end <= start:
                raise DownloadListError(f"{where}: end {end} is not after start {start}; fix the list")
            problem = video_id_problem(vid)
            row = DownloadRow(vid, (r.get("label") or "").strip(), (r.get("youtube_id") or "").strip(),
                              (r.get("url") or "").strip(), start, end, (r.get("group") or "").strip(),
                              problem=f"{problem} ({where})" if problem else "")
            if not row.url and not row.youtube_id:
                raise DownloadListError(f"{where}: neither url nor youtube_id; fix the list")
            rows.append(row)
    return rows


def write_download_list(path: str | Path, rows: Sequence[DownloadRow]) -> None:
    def num(x):
        return "" if x is None else repr(float(x))

    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DOWNLOAD_LIST_COLUMNS)
        for r in rows:
            w.writerow([r.video_id, r.youtube_id, r.url, num(r.start), num(r.end), r.label, r.group])


@dataclass
class DownloadOptions:
    url_pattern: str = DEFAULT_URL_PATTERN
    attempts: int = 4  # tries per video for transient errors
    backoff: float = 5.0  # seconds before the 2nd try; doubles each time
    max_backoff: float = 300.0
    ratelimit: int | None = None  # bytes per second (yt-dlp ``ratelimit``)
    sleep_interval: float = 0.0  # seconds yt-dlp sleeps before each download
    timeout: float = 30.0  # socket timeout in seconds (a stall)
    min_rate: float = 10_000.0  # bytes per second averaged over rate_window, below which a download stops (a trickle)
    rate_window: float = 60.0
    deadline: float | None = 1800.0  # seconds one video's download may take in all (None: no limit)
    sections: str = "auto"
    retry_unavailable: bool = False
    permanent_after_runs: int = 3  # runs that got a non-media body (e.g. an HTML page) before it counts as permanent
    ytdlp_options: dict = field(default_factory=dict)  # passed through to YoutubeDL (overrides)
    sleep: Callable[[float], None] = time.sleep  # tests replace it

    @classmethod
    def from_dict(cls, options: dict) -> DownloadOptions:
        """Options as the configuration / the CLI's --options give them; ValueError (one line) for unknown keys."""
        known = {f for f in cls.__dataclass_fields__ if f != "sleep"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown download option(s) {unknown}; known: {sorted(known)}")
        opts = cls(**options)
        if not isinstance(opts.permanent_after_runs, int) or opts.permanent_after_runs < 1:
            raise ValueError(f"permanent_after_runs must be a whole number >= 1, got {opts.permanent_after_runs!r}")
        return opts


@dataclass
class Outcome:
    video_id: str
    status: str  # available | unavailable | skipped (already available) | known (recorded before)
    reason: str = ""
    kind: str = ""  # permanent | transient (unavailable only)
    attempts: int = 0


class _Failure(Exception):
    """``permanent``: recorded at once; ``per_run``: not media at all (tried once a run, counted across runs)."""

    def __init__(self, reason: str, permanent: bool, per_run: bool = False):
        super().__init__(reason)
        self.reason, self.permanent, self.per_run = reason, permanent, per_run


class _Pace:
    """A yt-dlp progress hook that stops a download going too slowly (under ``min_rate`` bytes per second over the
    last ``window`` seconds) or for too long (past ``deadline``): yt-dlp's socket timeout only catches a stall, not
    a server that trickles. Its exception ends the download; the failure it leaves is transient (retried)."""

    def __init__(self, min_rate: float, window: float, deadline: float | None, clock=time.monotonic):
        self.min_rate, self.window, self.deadline, self.clock = min_rate, window, deadline, clock
        self.start = clock()
        self.marks: list[tuple[float, int]] = []  # (time, bytes) since the window began
        self.failure: _Failure | None = None

    def __call__(self, d: dict) -> None:
        if d.get("status") != "downloading":
            return
        now, done = self.clock(), int(d.get("downloaded_bytes") or 0)
        if self.deadline is not None and now - self.start > self.deadline:
            self._stop(f"the download took more than {self.deadline:g} s (the deadline); tried again next time")
        self.marks.append((now, done))
        while len(self.marks) > 1 and now - self.marks[1][0] >= self.window:
            self.marks.pop(0)
        t0, b0 = self.marks[0]
        if self.min_rate and now - self.start >= self.window and now - t0 >= self.window:
            rate = (done - b0) / (now - t0)
            if rate < self.min_rate:
                self._stop(f"the server sends {rate:.0f} bytes/s, under the minimum rate of {self.min_rate:g} over "
                           f"{self.window:g} s; tried again next time")

    def _stop(self, reason: str) -> None:
        self.failure = _Failure(reason, False)
        raise self.failure


class _QuietLogger:
    """yt-dlp prints errors to stderr by itself; they are raised and recorded here instead."""

    def debug(self, msg):
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg):
        log.info("yt-dlp: %s", msg)

    def error(self, msg):
        log.debug("yt-dlp: %s", msg)


def classify(exc: BaseException) -> _Failure:
    """A yt-dlp error as a permanent or transient failure with a one-line reason."""
    text = " ".join(str(exc).split())
    text = text.removeprefix("ERROR: ")
    status = None
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        status = getattr(e, "status", None) or getattr(e, "code", None) or status
        inner = getattr(e, "exc_info", None)
        e = (inner[1] if inner else None) or e.__cause__ or e.__context__
    if isinstance(status, int) and status in PERMANENT_STATUS:
        return _Failure(f"HTTP {status}: {text}", True)
    if isinstance(status, int):
        return _Failure(f"HTTP {status}: {text}", False)
    low = text.lower()
    if any(t in low for t in NON_MEDIA_TEXT):
        return _Failure(f"not media: {text}", False, per_run=True)
    if any(t in low for t in PERMANENT_TEXT):
        return _Failure(text, True)
    return _Failure(text, False)


def sniff_non_media(path: str | Path) -> str:
    """What a downloaded file is when it is plainly not media (``"an empty file"``, ``"an HTML page"``, ``"text"``),
    else ``""`` (it may still fail to decode: that is checked afterwards)."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head:
        return "an empty file"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<")):
        return "an HTML page"
    if text.startswith((b"{", b"[")) or all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text"
    return ""


def resolve_sections(sections: str) -> str:
    if sections not in SECTIONS:
        raise ValueError(f"sections must be one of {SECTIONS}, got {sections!r}")
    if sections == "auto":
        return "yt-dlp" if shutil.which("ffmpeg") else "pyav"
    if sections == "yt-dlp" and not shutil.which("ffmpeg"):
        raise RuntimeError("sections: yt-dlp needs the ffmpeg program on PATH (or use sections: pyav)")
    return sections


def clip_path(videos: Path, video_id: str) -> Path:
    return videos / f"{video_id}{CLIP_SUFFIX}"


def marker_path(videos: Path, video_id: str) -> Path:
    return videos / f"{video_id}{MARKER_SUFFIX}"


def validate_clip(path: str | Path, seconds: float = 1.0) -> None:
    """Decode the first ``seconds`` of ``path`` (video required, audio may be missing); raises MediaError."""
    from extractors.media.decode import decode

    decode(path, fps=4, sample_rate=16000, short_side=32, max_seconds=seconds, missing_ok=("audio",))


def cut_clip(src: str | Path, dst: str | Path, start: float | None, end: float | None) -> None:
    """Re-encode ``[start, end)`` of ``src`` into the mp4 ``dst`` (H.264 + AAC) with PyAV; timestamps from 0."""
    import av

    start = start or 0.0
    stop = float("inf") if end is None else end
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4") as out:
        vin = inp.streams.video[0] if inp.streams.video else None
        ain = inp.streams.audio[0] if inp.streams.audio else None
        if vin is None:
            raise _Failure("no video stream", True)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height = vin.codec_context.width // 2 * 2, vin.codec_context.height // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.codec_context.time_base = 1 / rate
        aout = None
        if ain is not None:
            aout = out.add_stream("aac", rate=ain.codec_context.sample_rate)
            aout.codec_context.layout = ain.codec_context.layout.name if ain.codec_context.layout.nb_channels <= 2 \
                else "stereo"
        if start > 0:
            inp.seek(int(start * av.time_base), any_frame=False, backward=True)
        streams = [s for s in (vin, ain) if s is not None]
        n_video = 0
        for frame in inp.decode(*streams):
            t = frame.time
            if t is None or t < start or t >= stop:
                continue
            if isinstance(frame, av.VideoFrame):
                f = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                f.pts, f.time_base = n_video, vout.codec_context.time_base
                n_video += 1
                out.mux(vout.encode(f))
            elif aout is not None:
                frame.pts = None
                for p in aout.encode(frame):
                    out.mux(p)
        if n_video == 0:
            raise _Failure(f"no video frames between {start} s and {end} s", True)
        out.mux(vout.encode())
        if aout is not None:
            out.mux(aout.encode())


class Downloader:
    def __init__(self, videos: str | Path, options: DownloadOptions | None = None):
        self.videos = Path(videos)
        self.opts = options or DownloadOptions()
        self.sections = resolve_sections(self.opts.sections)

    def _ytdlp(self, row: DownloadRow, work: Path) -> Path:
        import yt_dlp

        o = self.opts
        params = {
            "outtmpl": str(work / "source.%(ext)s"), "quiet": True, "no_warnings": True, "noprogress": True,
            "logger": _QuietLogger(), "noplaylist": True, "retries": 2, "fragment_retries": 2,
            "extractor_retries": 0, "socket_timeout": o.timeout, "overwrites": True, "continuedl": False,
            "format": "bv*[height<=480]+ba/b[height<=480]/bv*+ba/b", "merge_output_format": "mp4",
            "cachedir": False,
        }
        if o.ratelimit:
            params["ratelimit"] = o.ratelimit
        if o.sleep_interval:
            params["sleep_interval"] = o.sleep_interval
        if self.sections == "yt-dlp" and (row.start is not None or row.end is not None):
            from yt_dlp.utils import download_range_func

            params["download_ranges"] = download_range_func(None, [(row.start or 0.0, row.end or float("inf"))])
            params["force_keyframes_at_cuts"] = True
        pace = _Pace(o.min_rate, o.rate_window, o.deadline)
        params["progress_hooks"] = [pace]
        params.update(o.ytdlp_options)
        try:
            with yt_dlp.YoutubeDL(params) as ydl:
                info = ydl.extract_info(row.source_url(o.url_pattern), download=True)
        except Exception as e:  # yt-dlp raises DownloadError and friends; all are sorted by classify
            if pace.failure is not None:
                raise pace.failure from None
            raise classify(e) from e
        files = [Path(d["filepath"]) for d in (info or {}).get("requested_downloads", []) if d.get("filepath")]
        files = [f for f in files if f.exists()] or sorted(p for p in work.glob("source.*") if p.is_file())
        if not files:
            raise _Failure("yt-dlp reported success but wrote no file", False)
        return files[0]

    def _attempt(self, row: DownloadRow) -> None:
        from extractors.media.decode import MediaError

        work = self.videos / ".partial" / row.video_id
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            got = self._ytdlp(row, work)
            what = sniff_non_media(got)
            if what:
                raise _Failure(f"not media: the server sent {what} ({got.stat().st_size} bytes) instead of a video",
                               False, per_run=True)
            clip = work / f"clip{CLIP_SUFFIX}"
            if self.sections == "pyav" and (row.start is not None or row.end is not None):
                try:
                    cut_clip(got, clip, row.start, row.end)
                except _Failure:
                    raise
                except Exception as e:  # a source PyAV cannot read: as a decode failure, retried
                    raise _Failure(f"cannot cut the section: {type(e).__name__}: {e}", False) from e
            elif got.suffix == CLIP_SUFFIX:
                clip = got
            else:  # a whole video in another container: re-encode to mp4 so every clip is alike
                try:
                    cut_clip(got, clip, None, None)
                except _Failure:
                    raise
                except Exception as e:
                    raise _Failure(f"cannot read the download: {type(e).__name__}: {e}", False) from e
            try:
                validate_clip(clip)
            except MediaError as e:
                raise _Failure(f"undecodable: {e}", False) from e
            os.replace(clip, clip_path(self.videos, row.video_id))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def fetch(self, row: DownloadRow) -> Outcome:
        """One video: skipped when already there or known permanently unavailable, else tried with back-off. A
        video that cannot be tried at all (an id that cannot be a file name) fails alone, with nothing written."""
        problem = row.problem or video_id_problem(row.video_id)
        if problem:
            return Outcome(row.video_id, "unavailable", problem, "permanent", 0)
        try:
            return self._fetch(row)
        except OSError as e:
            if e.errno not in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
                raise  # a full disk or a folder that cannot be written stops the shard (one line from the CLI)
            return Outcome(row.video_id, "unavailable", f"video_id cannot be a file name here: {e.strerror}; "
                           "shorten it in the list", "permanent", 0)

    def _fetch(self, row: DownloadRow) -> Outcome:
        clip, marker = clip_path(self.videos, row.video_id), marker_path(self.videos, row.video_id)
        runs_file = self.videos / f"{row.video_id}{FAILURES_SUFFIX}"
        if clip.is_symlink():  # never listed: a clip is a regular file this code wrote; fetched again
            clip.unlink()
        if clip.exists():
            return Outcome(row.video_id, "skipped")
        if marker.exists() and not self.opts.retry_unavailable:
            rec = _read_json(marker)
            return Outcome(row.video_id, "known", rec.get("reason", ""), "permanent", rec.get("attempts", 0))
        self.videos.mkdir(parents=True, exist_ok=True)
        o = self.opts
        failure = None
        for attempt in range(1, max(1, o.attempts) + 1):
            try:
                self._attempt(row)
                marker.unlink(missing_ok=True)
                runs_file.unlink(missing_ok=True)
                return Outcome(row.video_id, "available", attempts=attempt)
            except _Failure as f:
                failure = f
                log.info("%s: attempt %d: %s", row.video_id, attempt, f.reason)
                if f.permanent or f.per_run:
                    break
                if attempt < o.attempts:
                    o.sleep(backoff_seconds(attempt - 1, o.backoff, o.max_backoff))
        if failure.per_run:  # counted across runs: transient until permanent_after_runs runs got no media
            url = row.source_url(o.url_pattern)
            rec = _read_json(runs_file) if runs_file.exists() else {}
            if rec.get("url") != url:  # the list now points elsewhere: count afresh
                rec = {}
            runs, attempt = int(rec.get("runs", 0)) + 1, int(rec.get("attempts", 0)) + attempt
            n = max(1, o.permanent_after_runs)
            if runs < n:
                reason = f"{failure.reason} (run {runs} of {n}; tried again by the next run)"
                write_json_atomic(runs_file, {"video_id": row.video_id, "url": url, "runs": runs,
                                              "attempts": attempt, "reason": failure.reason})
                return Outcome(row.video_id, "unavailable", reason, "transient", attempt)
            failure = _Failure(f"{failure.reason} (in {runs} runs)", True)
            runs_file.unlink(missing_ok=True)
        kind = "permanent" if failure.permanent else "transient"
        if failure.permanent:
            write_json_atomic(marker, {"video_id": row.video_id, "reason": failure.reason, "attempts": attempt})
        return Outcome(row.video_id, "unavailable", failure.reason, kind, attempt)


def _read_json(path: Path) -> dict:
    """A state file of an earlier run; an unreadable one counts as absent (it is rewritten)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def shard_rows(rows: Sequence[DownloadRow], shard: int, shards: int) -> list[DownloadRow]:
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} not in 0..{shards - 1}")
    return [r for i, r in enumerate(rows) if i % shards == shard]


def write_unavailable(path: str | Path, outcomes: Sequence[Outcome]) -> None:
    with atomic_path(path, suffix=".tsv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(UNAVAILABLE_COLUMNS)
        for o in outcomes:
            w.writerow([o.video_id, o.reason.replace("\t", " ").replace("\n", " "), o.kind, o.attempts])


def read_unavailable(path: str | Path) -> list[Outcome]:
    with open(path, newline="") as f:
        return [Outcome(r["video_id"], "unavailable", r["reason"], r.get("kind", ""), int(r.get("attempts") or 0))
                for r in csv.DictReader(f, delimiter="\t")]


def download(download_list: str | Path, manifest: str | Path, unavailable: str | Path,
             videos: str | Path | None = None, options: DownloadOptions | None = None,
             shard: int = 0, shards: int = 1) -> dict:
    """Fetch one shard of a download list; write its manifest (paths relative to the manifest's folder) and its
    unavailable.tsv. Returns counts."""
    manifest = Path(manifest)
    videos = Path(videos) if videos is not None else manifest.parent / "videos"
    rows = shard_rows(read_download_list(download_list), shard, shards)
    dl = Downloader(videos, options)
    outcomes = [dl.fetch(r) for r in rows]
    done = {o.video_id for o in outcomes if o.status in ("available", "skipped")}
    rel = Path(os.path.relpath(videos, manifest.parent))
    write_manifest(manifest, [ManifestRow(r.video_id, (rel / clip_path(Path(), r.video_id)).as_posix(), r.label,
                                          r.group or r.video_id) for r in rows if r.video_id in done])
    bad = [o for o in outcomes if o.status in ("unavailable", "known")]
    write_unavailable(unavailable, bad)
    counts = {"listed": len(rows), "available": len(done), "unavailable": len(bad),
              "downloaded": sum(o.status == "available" for o in outcomes),
              "skipped": sum(o.status == "skipped" for o in outcomes), "sections": dl.sections}
    return counts


# ------------------------------------------------------------------------------------------ merging, coverage
def merge_shards(manifests: Sequence[str | Path], unavailables: Sequence[str | Path], manifest: str | Path,
                 unavailable: str | Path, class_names: str | Path | None = None,
                 descriptions: dict[str, str] | None = None) -> None:
    """Join the shards' manifests (paths re-rooted at ``manifest``'s folder) and unavailable lists."""
    manifest = Path(manifest)
    rows = []
    for m in manifests:
        for r in read_manifest(m):
            p = Path(os.path.relpath(Path(m).parent / r.path, manifest.parent)).as_posix()
            rows.append(ManifestRow(r.video_id, p, r.label, r.group))
    write_manifest(manifest, rows)
    write_unavailable(unavailable, [o for u in unavailables for o in read_unavailable(u)])
    if class_names is not None:
        descriptions = descriptions or {}
        names = sorted({r.label for r in rows})
        write_class_names(class_names, [{"original": n, "manual": descriptions.get(n, n.replace("_", " "))}
                                        for n in names])


def coverage(download_list: str | Path | None, manifest: str | Path, split_dir: str | Path | None = None,
             ) -> list[dict]:
    """Rows ``{split, label, available, listed}``: per stage and class of the split folder when given (and
    present), and per class of the download list (split ``all``); without a download list (e.g. UCF101 from its
    archive) ``all`` lists every video of the split's stages once."""
    have = {r.video_id for r in read_manifest(manifest)}
    groups: dict[tuple[str, str], list[str]] = {}
    every: dict[str, str] = {}
    if split_dir is not None and Path(split_dir).is_dir():
        from extractors.splits import read_splits

        splits = read_splits(split_dir)
        for stage, vids in splits.videos.items():
            for vid, label in vids:
                groups.setdefault((stage, label), []).append(vid)
                every.setdefault(vid, label)
    if download_list is not None:
        every = {r.video_id: r.label for r in read_download_list(download_list)}
    elif not every:
        raise DownloadListError("coverage needs a download list or a split folder")
    for vid, label in every.items():
        groups.setdefault(("all", label), []).append(vid)
    order = {"all": -1}
    return [{"split": s, "label": lab, "available": sum(v in have for v in vids), "listed": len(vids)}
            for (s, lab), vids in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 0), kv[0]))]


def write_coverage(rows: Sequence[dict], tsv: str | Path, md: str | Path) -> None:
    with atomic_path(tsv, suffix=".tsv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["split", "label", "available", "listed", "fraction"])
        for r in rows:
            w.writerow([r["split"], r["label"], r["available"], r["listed"], _frac(r)])
    lines = ["# Download coverage", "", "Available clips / listed clips.", ""]
    for split, a, n, part in coverage_by_split(rows):
        title = "All listed videos, per class" if split == "all" else f"Split `{split}`"
        lines += [f"## {title}: {a} / {n} ({percent(a, n)})", "", "| class | available | listed | % |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['label']} | {r['available']} | {r['listed']} | {percent(r['available'], r['listed'])} |"
                  for r in part]
        lines.append("")
    with atomic_path(md, suffix=".md") as tmp:
        tmp.write_text("\n".join(lines))


def read_coverage(tsv: str | Path) -> list[dict]:
    """The rows of a coverage.tsv as :func:`coverage` made them: ``{split, label, available, listed}``."""
    with open(tsv, newline="") as f:
        return [{"split": r["split"], "label": r["label"], "available": int(r["available"]),
                 "listed": int(r["listed"])} for r in csv.DictReader(f, delimiter="\t")]


def coverage_by_split(rows: Sequence[dict]) -> list[tuple[str, int, int, list[dict]]]:
    """``(split, available, listed, the split's rows)`` per split, in the order the rows first name them."""
    out = []
    for split in dict.fromkeys(r["split"] for r in rows):
        part = [r for r in rows if r["split"] == split]
        out.append((split, sum(r["available"] for r in part), sum(r["listed"] for r in part), part))
    return out


def _frac(r):
    return f"{r['available'] / r['listed']:.4f}" if r["listed"] else ""


def percent(a: int, n: int) -> str:
    return f"{100 * a / n:.1f} %" if n else "-"


def coverage_statement(rows: Sequence[dict]) -> str:
    """One sentence for a results table: how many of the listed (official) videos were available, in all and in
    the test stages, from a coverage.tsv's rows (:func:`read_coverage`)."""
    totals = {split: (a, n) for split, a, n, _ in coverage_by_split(rows)}
    if not totals:
        return "no coverage rows"
    parts = []
    if "all" in totals:
        a, n = totals["all"]
        parts.append(f"{a} / {n} listed videos available ({percent(a, n)})")
    for stage in ("stage_2_test_seen", "stage_2_test_unseen"):
        if stage in totals:
            a, n = totals[stage]
            parts.append(f"{stage} {a} / {n} ({percent(a, n)})")
    return "; ".join(parts)
