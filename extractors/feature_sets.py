"""Feature-set entries of the configuration, read without torch (the workflow builds its DAG with this).

An entry names ``backbone`` + ``params`` for every modality, and/or ``audio: {backbone, params}`` and
``video: {backbone, params}``; a modality with its own entry takes it, the others the top-level backbone.
"""

from __future__ import annotations

MODALITIES = ("audio", "video")


class BackboneError(ValueError):
    """A backbone or feature set that cannot be built as configured (unknown name, key or parameter, missing
    weights)."""


def normalize_feature_set(fs: dict, where: str = "feature set") -> dict[str, dict]:
    """``{"audio": {"backbone", "params"}, "video": {...}}`` from a feature-set entry: ``backbone`` + ``params``
    serve every modality that has no entry of its own (``audio:`` / ``video:``)."""
    if not isinstance(fs, dict):
        raise BackboneError(f"{where}: must be a mapping with backbone/params or audio/video entries")
    known = {"backbone", "params", "audio", "video"}
    unknown = sorted(set(fs) - known)
    if unknown:
        raise BackboneError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    out = {}
    for m in MODALITIES:
        part = fs.get(m)
        if part is None:
            if not fs.get("backbone"):
                raise BackboneError(f"{where}: no backbone for {m}: set {where}.backbone or {where}.{m}.backbone")
            part = {"backbone": fs["backbone"], "params": fs.get("params") or {}}
        elif not isinstance(part, dict) or not part.get("backbone"):
            raise BackboneError(f"{where}.{m}: must be a mapping with a backbone name (and params)")
        bad = sorted(set(part) - {"backbone", "params"})
        if bad:
            raise BackboneError(f"{where}.{m}: unknown key(s) {bad}; known: ['backbone', 'params']")
        params = part.get("params") or {}
        if not isinstance(params, dict):
            raise BackboneError(f"{where}.{m}.params: must be a mapping of parameter names to values")
        out[m] = {"backbone": str(part["backbone"]), "params": dict(params)}
    return out
