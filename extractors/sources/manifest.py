"""The manifest format: what a dataset source hands to extraction and split building.

``manifest.csv``: ``video_id,path,label,group``. ``path`` is relative to the manifest's folder unless absolute;
``label`` is the class name used in the split files; ``group`` names the source recording, so that clips cut from
one recording never land on both sides of a split.

``class_names.csv``: ``original,manual[,...]`` as in the AVCA benchmark's ``*_w2v_class_names.csv``: ``original``
is the class name of the split files, ``manual`` the text that is embedded; extra columns are class factors.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from avzsl.common import atomic_path

MANIFEST_COLUMNS = ("video_id", "path", "label", "group")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class ManifestRow:
    video_id: str
    path: str
    label: str
    group: str = ""


def write_manifest(path: str | Path, rows: Sequence[ManifestRow]) -> None:
    ids = [r.video_id for r in rows]
    if len(set(ids)) != len(ids):
        raise ManifestError(f"{path}: duplicate video ids")
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        for r in rows:
            w.writerow([r.video_id, r.path, r.label, r.group or r.video_id])


def read_manifest(path: str | Path) -> list[ManifestRow]:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark at the start is not in the header
        reader = csv.DictReader(f)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ManifestError(f"{path}: missing columns {sorted(missing)}")
        return [ManifestRow(r["video_id"], r["path"], r["label"], r["group"] or r["video_id"]) for r in reader]


def resolve_media(manifest_path: str | Path, row: ManifestRow) -> Path:
    p = Path(row.path)
    return p if p.is_absolute() else Path(manifest_path).parent / p


def write_class_names(path: str | Path, rows: Iterable[dict], extra_columns: Sequence[str] = ()) -> None:
    cols = ["original", "manual", *extra_columns]
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def read_class_table(path: str | Path) -> dict[str, dict[str, str]]:
    """Every row of a class-name table by its ``original`` class name: ``manual`` and any extra columns."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"class-name table not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"original", "manual"} <= set(reader.fieldnames or []):
            raise ManifestError(f"{path}: expected columns 'original,manual'")
        table = {}
        for r in reader:
            if r["original"] in table:
                raise ManifestError(f"{path}: class {r['original']!r} listed twice")
            table[r["original"]] = {k: v for k, v in r.items() if k != "original"}
    return table


def read_class_names(path: str | Path) -> dict[str, str]:
    """``original -> manual`` (the text to embed for each class)."""
    return {original: row["manual"] for original, row in read_class_table(path).items()}


def read_class_factors(path: str | Path) -> dict[str, dict[str, str]]:
    """The extra columns of each class (e.g. the demo's ``visual`` and ``sound``), by original class name."""
    return {original: {k: v for k, v in row.items() if k != "manual"} for original, row in read_class_table(path).items()}
