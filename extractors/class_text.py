"""The class text store of a split: every class's text (its readable name in a template) embedded by one encoder,
with a report beside it (per class its text and, for word-vector encoders, the words out of vocabulary)."""

from __future__ import annotations

from pathlib import Path

from avzsl.common import write_json_atomic
from extractors.sources.manifest import read_class_names
from extractors.splits import read_splits
from extractors.text_encoders import check_params, encode_with_report
from extractors.text_encoders.word_vectors import NoKnownWord
from extractors.text_store import write_text_store


def write_class_text(split_dir: str | Path, class_names: str | Path, encoder: str, params: dict, template: str,
                     out: str | Path, report_path: str | Path | None = None) -> None:
    classes = read_splits(split_dir).all_classes
    manual = read_class_names(class_names)
    missing = [c for c in classes if c not in manual]
    if missing:
        raise ValueError(f"{class_names} has no text for classes {missing[:5]}")
    texts = [template.format(manual[c]) for c in classes]
    params = check_params(encoder, params)
    try:
        vectors, report = encode_with_report(texts, encoder, params)
    except NoKnownWord as e:
        raise ValueError(f"class {classes[e.index]!r}: {e}") from None
    write_text_store(out, classes, texts, vectors, encoder, {**params, "template": template})
    if report_path:
        write_json_atomic(report_path, text_report(classes, texts, encoder, params, vectors, report))


def text_report(classes, texts, encoder, params, vectors, report) -> dict:
    """What :func:`write_class_text` records beside the store: per class its text and, for word-vector encoders, the
    words left out as out of vocabulary (fastText: whether the whole text was a vocabulary entry)."""
    per_class = {}
    for i, (c, t) in enumerate(zip(classes, texts)):
        entry = {"text": t}
        if "oov" in report:
            entry["oov"] = report["oov"][i]
        if "in_vocabulary" in report:
            entry["in_vocabulary"] = bool(report["in_vocabulary"][i])
        per_class[c] = entry
    summary = {"encoder": encoder, "params": params, "dim": int(vectors.shape[1]), "classes": len(classes)}
    if "oov" in report:
        summary["classes_with_oov"] = sum(bool(x) for x in report["oov"])
    summary.update({k: v for k, v in report.items() if k not in ("oov", "in_vocabulary")})
    return {**summary, "per_class": per_class}
