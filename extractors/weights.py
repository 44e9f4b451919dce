"""Weight files named in a feature set's params: fetched once into ``resources/weights/``, checked, recorded.

A backbone's params may hold ``url`` (http(s), ``file://`` or a local path) and ``sha256`` for its ``weights``, and
``<param>_url`` / ``<param>_sha256`` for any other file parameter (e.g. VGGish's ``pca``); the workflow's
``fetch_weights`` rule calls :func:`fetch`, which downloads (resuming a ``.partial`` file with an HTTP range
request when the server allows it), enforces the configured digest, moves the file into place and writes a sidecar
``<file>.json`` (source, size, sha256) that extraction copies into the feature store's provenance. The extraction
then gets the local file as that parameter (:func:`resolve_weight_params`). No torch here: the
workflow imports this module to build its DAG.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import re
import shutil
import struct
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from avzsl import lockfile
from avzsl.common import file_digest, write_json_atomic
from avzsl.fetching import (
    LARGE_FILE_LIMITS,
    Clock,
    FetchError,
    Limits,
    copy_body,
    describe,
    html_error,
    is_html_answer,
    local_path,
    with_retries,
)

RESERVED = ("url", "sha256")  # params handled here, never passed to a backbone
WEIGHTS_PARAM = "weights"
URL_SUFFIX, SHA_SUFFIX = "_url", "_sha256"  # <param>_url, <param>_sha256: another file parameter, fetched alike
ROOT = "resources/weights"


class WeightsError(ValueError):
    pass


def sha256_of(path: str | Path) -> str:
    return file_digest(path)


def fetch(url: str, out: str | Path, sha256: str | None = None, where: str = "weights", timeout: float = 60,
          retries: int = 0, backoff: float = 5.0, limits: Limits | None = None,
          sleep: Callable[[float], None] | None = None, content: Callable[[Path], None] | None = None,
          content_name: str = "") -> dict:
    """Bring ``url`` to ``out`` (atomically) and write ``out``.json; returns the record. ``where`` names the config
    key in messages. ``retries``: further tries after a transient failure (network error, HTTP 5xx/429, a body
    shorter than announced, an HTML page, a trickle below ``limits.min_rate``), ``backoff`` seconds apart, doubled
    each time, or what ``Retry-After`` asks; each try resumes the partial file when that is safe (:func:`_download`).
    ``limits`` (default :data:`avzsl.fetching.LARGE_FILE_LIMITS` with ``timeout``): the deadlines. Before the file
    gets its final name it must pass the format check of its kind (:func:`check_format`), the configured digest and,
    for a url, the digest locked in the lock file (:mod:`avzsl.lockfile`; recorded there on first use).
    ``content``: a further check of what the file holds (e.g. ``Backbone.check_file``: a checkpoint has the keys its
    backbone loads), raising ValueError; ``content_name`` says what the file should be in its message."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    local = local_path(url)
    if local is not None:
        if not local.is_file():
            raise WeightsError(f"{where}.url: local weight file not found: {local}")
        _discard(partial)
        shutil.copyfile(local, partial)
    else:
        if limits is None:
            limits = Limits(timeout=timeout, min_rate=LARGE_FILE_LIMITS.min_rate,
                            rate_window=LARGE_FILE_LIMITS.rate_window, deadline=LARGE_FILE_LIMITS.deadline)
        clock = Clock(url, limits)
        try:
            with_retries(lambda: _download(url, partial, limits, clock), retries, backoff, sleep,
                         limits.retry_after_cap, clock)
        except FetchError as e:
            if not e.transient:
                raise WeightsError(str(e)) from None
            kept = ("the partial file is kept and the next run resumes it" if partial.is_file()
                    else "the next run tries again")
            raise WeightsError(f"{e} ({kept})") from None
    try:
        check_format(partial, out.name, url)
        if content is not None:
            _check_content(content, partial, out.name, url, content_name)
    except WeightsError:
        _discard(partial)
        raise
    digest = sha256_of(partial)
    if sha256 and digest != sha256.lower():
        _discard(partial)
        raise WeightsError(f"{where}.sha256: {url} has sha256 {digest}, the configuration says {sha256.lower()}; "
                           "the download was discarded (fix the url or the digest)")
    if local is None:  # fetched: verified against the lock file, locked on first use (a pinned digest wins)
        try:
            lockfile.check(url, digest, partial.stat().st_size, where, name=str(out), pinned=bool(sha256))
        except lockfile.LockError as e:
            _discard(partial)
            raise WeightsError(str(e)) from None
    record = {"source": url, "file": out.name, "size": partial.stat().st_size, "sha256": digest}
    os.replace(partial, out)
    _partial_meta(partial).unlink(missing_ok=True)
    write_json_atomic(sidecar(out), record)
    return record


# ------------------------------------------------------------------------------------------------ one download
def _partial_meta(partial: Path) -> Path:
    """``<file>.partial.json``: the url and validator (ETag or Last-Modified) the partial file belongs to."""
    return Path(str(partial) + ".json")


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _partial_meta(partial).unlink(missing_ok=True)


def _read_meta(partial: Path) -> dict:
    try:
        meta = json.loads(_partial_meta(partial).read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _validator(resp) -> str | None:
    """What ``If-Range`` may send back: a strong ETag, else Last-Modified (a weak ETag may not be used there)."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified")


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``bytes a-b/n`` -> (a, b, n) and ``bytes */n`` -> (None, None, n); None where absent or unreadable."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    a, b, n = m.groups()
    return (int(a) if a else None, int(b) if b else None, int(n) if n and n != "*" else None)


def _download(url: str, partial: Path, limits: Limits, clock: Clock) -> None:
    """One try. A ``partial`` is resumed (``Range`` with ``If-Range``) only when its sidecar names this url and a
    validator; the answer must fit it (a 206 starting exactly at its end, a 416 saying its size is the whole file),
    else the partial is discarded and the download starts again from byte 0. The body must be as long as announced
    (:func:`avzsl.fetching.copy_body`); a short one stays as a partial to resume, when it can be."""
    for _ in range(2):  # a resume the server does not honour as asked: once more from byte 0
        have = partial.stat().st_size if partial.is_file() else 0
        meta = _read_meta(partial)
        if have and (meta.get("url") != url or not meta.get("validator")):
            _discard(partial)  # another url's, or nothing to check a resume against
            have = 0
        headers = {"Range": f"bytes={have}-", "If-Range": meta["validator"]} if have else {}
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=clock.timeout()) as resp:
                if is_html_answer(url, resp):
                    raise html_error(url)
                if have and resp.status == 206:
                    first, _, total = _content_range(resp.headers.get("Content-Range"))
                    if first != have:
                        _discard(partial)  # not the continuation asked for
                        continue
                    with open(partial, "ab") as f:
                        copy_body(url, resp, f, limits, clock)
                    if total is not None and partial.stat().st_size != total:
                        raise FetchError(f"cannot download {url}: {partial.stat().st_size} bytes after the resume, "
                                         f"the server says {total}", True)
                    return
                if resp.status == 206:  # a range nobody asked for
                    raise FetchError(f"cannot download {url}: HTTP 206 to a request without a range", True)
                _discard(partial)
                write_json_atomic(_partial_meta(partial), {"url": url, "validator": _validator(resp)})
                with open(partial, "wb") as f:
                    try:
                        copy_body(url, resp, f, limits, clock)
                    except FetchError:
                        if not _validator(resp):  # cannot be resumed safely
                            f.close()
                            _discard(partial)
                        raise
                return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                _, _, total = _content_range(e.headers.get("Content-Range") if e.headers else None)
                if total == have:  # the partial is the whole file
                    return
                _discard(partial)
                continue
            raise describe(url, e) from None
        except FetchError:
            raise
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            raise describe(url, e) from None
    raise FetchError(f"cannot download {url}: the server does not resume as asked, even from byte 0", True)


# ------------------------------------------------------------------------------------------------ format checks
CHECKPOINTS = (".pth", ".pt", ".pickle", ".pkl", ".ckpt")
ARCHIVES = (".zip", ".rar", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz", ".tbz2", ".txz", ".7z")
FASTTEXT_MAGIC = 793712314  # int32, little-endian, at the start of a fastText .bin


def check_format(path: str | Path, name: str, url: str) -> str | None:
    """Check that ``path`` (to be named ``name``, fetched from ``url``) is what its name says; returns the check
    made (None: a kind without one). :class:`WeightsError` naming the url and the failed check otherwise."""
    path, lower = Path(path), name.lower()
    reason, kind = None, None
    if _looks_like_html(path) and not lower.endswith((".html", ".htm")):
        reason, kind = "it is an HTML page", "a " + (Path(lower).suffix.lstrip(".") or "file") + " file"
    elif lower.endswith(CHECKPOINTS):
        kind, reason = "a checkpoint", _checkpoint_problem(path)
    elif lower.endswith(ARCHIVES):
        kind, reason = "an archive", _archive_problem(path, lower)
    elif lower.endswith(".npz"):
        kind, reason = "an .npz file", _npz_problem(path)
    elif lower.endswith((".csv", ".json", ".txt", ".tsv")):
        kind, reason = f"a {Path(lower).suffix} file", _text_problem(path, Path(lower).suffix)
    elif lower.endswith(".bin"):
        kind, reason = "a fastText or word2vec .bin", _bin_problem(path)
    else:
        return None
    if reason:
        raise WeightsError(f"{url}: not {kind} ({reason}); the download was discarded (check the url; the next run "
                           "downloads it again)")
    return kind


def _check_content(content: Callable[[Path], None], partial: Path, name: str, url: str, what: str) -> None:
    try:
        content(partial)
    except ValueError as e:
        reason = " ".join(str(e).split()).replace(f"{partial}: ", "").replace(str(partial), name)
        reason = reason if len(reason) <= 400 else reason[:400] + "…"
        raise WeightsError(f"{url}: not {what or 'the expected file'} ({reason}); the download was discarded "
                           "(check the url; the next run downloads it again)") from None


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _checkpoint_problem(path: Path) -> str | None:
    from extractors.checkpoints import CheckpointError, load_checkpoint  # torch: only here

    try:
        load_checkpoint(path, numpy_arrays=True)
    except CheckpointError as e:
        text = " ".join(str(e).split()).replace(f"{path}: ", "").replace(str(path), path.name)
        m = re.search(r"it is not a plain tensor checkpoint \((.*?)\), and loading", text)
        return f"torch.load(weights_only=True) refused it: {m.group(1) if m else text}"[:300]
    return None


def _archive_problem(path: Path, lower: str) -> str | None:
    import tarfile
    import zipfile

    try:
        if lower.endswith(".zip"):  # its directory is at the end: a zip cut short has none
            if not zipfile.is_zipfile(path):
                return "it does not list: no zip central directory (cut short, or not a zip)"
            with zipfile.ZipFile(path) as z:
                z.namelist()
            return None
        if ".tar" in lower or lower.endswith((".tgz", ".tbz2", ".txz")):
            with tarfile.open(path) as t:
                t.getmembers()
            return None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        return f"it does not list: {type(e).__name__}: {str(e)[:200]}"
    listers = [cmd for cmd in (["bsdtar", "-tf"], ["lsar", "-t"]) if shutil.which(cmd[0])]
    if not listers:
        return None  # no program that lists it here: the extraction will tell
    errors = []
    for cmd in listers:
        r = subprocess.run([*cmd, str(path)], capture_output=True, text=True, errors="replace")
        if r.returncode == 0 and not (cmd[0] == "lsar" and "truncated" in r.stdout.lower()):
            return None
        errors.append(f"{cmd[0]}: {' '.join((r.stderr or r.stdout).split())[:200]}")
    return "it does not list: " + "; ".join(errors)


def _npz_problem(path: Path) -> str | None:
    import zipfile

    import numpy as np

    if not zipfile.is_zipfile(path):  # numpy would try it as a pickle and say so, which misleads
        return "it is not a zip archive of arrays"
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                z[key]
    except Exception as e:  # noqa: BLE001 - whatever numpy or zipfile says: a damaged or wrong file
        return f"it does not load with allow_pickle=False: {type(e).__name__}: {str(e)[:200]}"
    return None


def _text_problem(path: Path, suffix: str) -> str | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return f"it is not UTF-8 text: {e}"
    if suffix == ".json":
        try:
            json.loads(text)
        except ValueError as e:
            return f"it does not parse as JSON: {e}"
    elif suffix in (".csv", ".tsv"):
        try:
            list(csv.reader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ","))
        except csv.Error as e:
            return f"it does not parse as {suffix[1:].upper()}: {e}"
    return None


def _bin_problem(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(64)
    if len(head) >= 4 and struct.unpack("<i", head[:4])[0] == FASTTEXT_MAGIC:
        return None
    if re.match(rb"\d+ \d+\r?\n", head):  # a word2vec binary's "count dim" header
        return None
    return f"it does not begin with the fastText magic number {FASTTEXT_MAGIC} nor a word2vec header"


def sidecar(path: str | Path) -> Path:
    return Path(str(path) + ".json")


def read_record(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------- feature sets
def file_param_keys(params: dict) -> dict[str, tuple[str, str]]:
    """``{param: (url key, sha256 key)}`` for every file parameter that ``params`` gives a url or a digest for:
    ``url`` / ``sha256`` stand for ``weights``, ``<param>_url`` / ``<param>_sha256`` for any other."""
    keys = {WEIGHTS_PARAM: ("url", "sha256")} if "url" in params or "sha256" in params else {}
    for key in params:
        for suffix in (URL_SUFFIX, SHA_SUFFIX):
            if key.endswith(suffix):
                param = key[: -len(suffix)]
                keys[param] = (param + URL_SUFFIX, param + SHA_SUFFIX)
    return keys


def _file_params(params: dict) -> dict[str, tuple[str, str]]:
    """``{param: (url, sha256)}`` for every parameter of ``params`` given by url."""
    return {param: (params[url], params.get(sha) or "") for param, (url, sha) in file_param_keys(params).items()
            if params.get(url)}


def _reserved(params: dict) -> set[str]:
    return set(RESERVED).union(*file_param_keys(params).values())


def weight_targets(feature_set: str, spec: dict[str, dict]) -> dict[str, dict]:
    """The files a normalised feature set (``{"audio": {backbone, params}, "video": ...}``) needs fetched, by their
    path under ``resources/weights/<feature set>/<part>/``: ``{path: {"url", "sha256", "part", "param"}}``; part
    ``av`` when both modalities share one backbone; ``backbone`` names the backbone whose ``param`` the file fills."""
    parts = {"av": spec["audio"]} if spec["audio"] == spec["video"] else dict(spec)
    out = {}
    for part, entry in parts.items():
        for param, (url, sha256) in _file_params(entry.get("params") or {}).items():
            name = Path(urllib.parse.urlparse(url).path).name or param
            path = f"{ROOT}/{feature_set}/{part}/{name}"
            if path in out:
                raise WeightsError(f"feature_sets.{feature_set}: {out[path]['param']} and {param} both fetch a file "
                                   f"named {name}")
            out[path] = {"url": url, "sha256": sha256, "part": part, "param": param, "backbone": entry["backbone"]}
    return out


def resolve_weight_params(feature_set: str, spec: dict[str, dict]) -> dict[str, dict]:
    """The feature set as extraction receives it: each ``url`` / ``<param>_url`` (and digest) replaced by the fetched
    file as ``weights`` / ``<param>``."""
    targets = weight_targets(feature_set, spec)
    shared = spec["audio"] == spec["video"]
    out = {}
    for m, entry in spec.items():
        part = "av" if shared else m
        params = dict(entry.get("params") or {})
        params = {k: v for k, v in params.items() if k not in _reserved(params)}
        for path, t in targets.items():
            if t["part"] == part:
                params[t["param"]] = path
        out[m] = {"backbone": entry["backbone"], "params": params}
    return out


def check_local(params: dict, where: str) -> dict:
    """Params given straight to extraction: each digest (``sha256``, ``<param>_sha256``) is checked against its local
    file; urls are the workflow's business. Returns the params without the reserved keys."""
    for param, (url_key, sha_key) in file_param_keys(params).items():
        if params.get(url_key):
            raise WeightsError(f"{where}.params.{url_key}: files given by url are fetched by the workflow (rule "
                               f"fetch_weights, or `avzsl fetch`); pass the local file as '{param}'")
        if params.get(sha_key) and params.get(param):
            digest = sha256_of(params[param])
            if digest != params[sha_key].lower():
                raise WeightsError(f"{where}.params.{sha_key}: {params[param]} has sha256 {digest}, the "
                                   f"configuration says {params[sha_key].lower()}")
    return {k: v for k, v in params.items() if k not in _reserved(params)}
