"""An encoder's model file: a local ``path``, or a ``url`` the workflow (or the encoder) fetches once."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from extractors.text_encoders.registry import TextEncoderError, encoder_spec

TEXT_WEIGHTS_ROOT = "resources/weights/_text"  # a feature-set name cannot start with "_"


def weights_target(params: dict) -> dict | None:
    """Where the workflow fetches a ``url`` model file: ``{"url", "sha256", "path"}``, or None for a local one."""
    if not params.get("url"):
        return None
    name = Path(urllib.parse.urlparse(params["url"]).path).name or "model"
    return {"url": params["url"], "sha256": params.get("sha256") or "", "path": f"{TEXT_WEIGHTS_ROOT}/{name}"}


def resolved_params(params: dict) -> dict:
    """The parameters the text command gets from the workflow: a fetched ``url`` replaced by its local ``path``
    (the digest was enforced by the fetch)."""
    target = weights_target(params)
    if target is None:
        return dict(params)
    return {**{k: v for k, v in params.items() if k not in ("url", "sha256")}, "path": target["path"]}


def model_file(params: dict, encoder: str) -> Path:
    """The encoder's model file: ``path`` (checked against ``sha256`` when given) or ``url`` fetched into
    ``resources/weights/_text/`` (reused when its record names the same url and digest)."""
    from extractors.weights import fetch, read_record, sha256_of, sidecar

    where = f"text.{encoder_spec(encoder).block}"
    sha = (params.get("sha256") or "").lower()
    if params.get("path"):
        path = Path(params["path"])
        if not path.is_file():
            raise TextEncoderError(f"{where}.path: model file not found: {path}")
        if sha:
            digest = sha256_of(path)
            if digest != sha:
                raise TextEncoderError(f"{where}.sha256: {path} has sha256 {digest}, the configuration says {sha}")
        return path
    target = weights_target(params)
    out = Path(target["path"])
    if out.is_file() and sidecar(out).is_file():
        record = read_record(sidecar(out))
        if record.get("source") == target["url"] and (not sha or record.get("sha256") == sha):
            return out
    fetch(target["url"], out, sha or None, where=where)
    return out


