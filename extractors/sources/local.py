"""A local folder of videos laid out as ``<root>/<class name>/<video file>``."""

from __future__ import annotations

from pathlib import Path

from extractors.sources.manifest import ManifestRow, write_class_names, write_manifest

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")


def scan(root: str | Path, out_dir: str | Path, descriptions: dict[str, str] | None = None,
         manifest: str | Path | None = None, class_names: str | Path | None = None) -> Path:
    """Write the manifest and the class-name table (default ``manifest.csv`` and ``class_names.csv`` in ``out_dir``)
    for the folder tree under ``root``.

    ``descriptions`` maps a class folder name to the text to embed; by default the folder name with
    underscores turned into spaces."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"local video folder not found: {root}")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(class_dir.rglob("*")):
            if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES:
                rel = f.relative_to(class_dir).with_suffix("")
                vid = f"{class_dir.name}/{rel.as_posix()}"
                rows.append(ManifestRow(vid, str(f), class_dir.name, group=vid))
    if not rows:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}/<class>/")
    out_dir = Path(out_dir)
    manifest = Path(manifest or out_dir / "manifest.csv")
    write_manifest(manifest, rows)
    names = sorted({r.label for r in rows})
    descriptions = descriptions or {}
    write_class_names(class_names or out_dir / "class_names.csv",
                      [{"original": n, "manual": descriptions.get(n, n.replace("_", " "))} for n in names])
    return manifest
