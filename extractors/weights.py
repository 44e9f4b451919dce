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

import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from avzsl.common import file_digest, write_json_atomic
from avzsl.fetching import FetchError, describe, local_path, with_retries

RESERVED = ("url", "sha256")  # params handled here, never passed to a backbone
WEIGHTS_PARAM = "weights"
URL_SUFFIX, SHA_SUFFIX = "_url", "_sha256"  # <param>_url, <param>_sha256: another file parameter, fetched alike
ROOT = "resources/weights"


class WeightsError(ValueError):
    pass


def sha256_of(path: str | Path) -> str:
    return file_digest(path)


def fetch(url: str, out: str | Path, sha256: str | None = None, where: str = "weights", timeout: float = 60,
          retries: int = 0, backoff: float = 5.0) -> dict:
    """Bring ``url`` to ``out`` (atomically) and write ``out``.json; returns the record. ``where`` names the config
    key in messages. ``retries``: further tries after a network error or an HTTP 5xx/429 answer, ``backoff``
    seconds apart, doubled each time; each try resumes the partial file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    local = local_path(url)
    if local is not None:
        if not local.is_file():
            raise WeightsError(f"{where}.url: local weight file not found: {local}")
        shutil.copyfile(local, partial)
    else:
        try:
            with_retries(lambda: _download(url, partial, timeout), retries, backoff)
        except FetchError as e:
            raise WeightsError(f"{e} (the partial file is kept and the next run resumes it)"
                               if e.transient else str(e)) from None
    digest = sha256_of(partial)
    if sha256 and digest != sha256.lower():
        partial.unlink()
        raise WeightsError(f"{where}.sha256: {url} has sha256 {digest}, the configuration says {sha256.lower()}; "
                           "the download was discarded (fix the url or the digest)")
    record = {"source": url, "file": out.name, "size": partial.stat().st_size, "sha256": digest}
    os.replace(partial, out)
    write_json_atomic(sidecar(out), record)
    return record


def _download(url: str, partial: Path, timeout: float) -> None:
    """One try, resuming ``partial`` with a Range request where the server supports it."""
    have = partial.stat().st_size if partial.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resumed = have and resp.status == 206
            with open(partial, "ab" if resumed else "wb") as f:
                shutil.copyfileobj(resp, f, 1 << 20)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            return
        raise describe(url, e) from None
    except (urllib.error.URLError, OSError) as e:
        raise describe(url, e) from None


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
    ``av`` when both modalities share one backbone."""
    parts = {"av": spec["audio"]} if spec["audio"] == spec["video"] else dict(spec)
    out = {}
    for part, entry in parts.items():
        for param, (url, sha256) in _file_params(entry.get("params") or {}).items():
            name = Path(urllib.parse.urlparse(url).path).name or param
            path = f"{ROOT}/{feature_set}/{part}/{name}"
            if path in out:
                raise WeightsError(f"feature_sets.{feature_set}: {out[path]['param']} and {param} both fetch a file "
                                   f"named {name}")
            out[path] = {"url": url, "sha256": sha256, "part": part, "param": param}
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
                               f"fetch_weights, or `avzsl fetch-weights`); pass the local file as '{param}'")
        if params.get(sha_key) and params.get(param):
            digest = sha256_of(params[param])
            if digest != params[sha_key].lower():
                raise WeightsError(f"{where}.params.{sha_key}: {params[param]} has sha256 {digest}, the "
                                   f"configuration says {params[sha_key].lower()}")
    return {k: v for k, v in params.items() if k not in _reserved(params)}
