"""A local folder of videos laid out as ``<root>/<class name>/<video file>``."""

from __future__ import annotations

import hashlib
import os
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


def contents_digest(root: str | Path) -> str:
    """A short digest of what :func:`scan` would read under ``root``: each video file's path relative to ``root``,
    size and modification time (no file is opened; one ``os.scandir`` per folder, so cheap for large folders).

    The workflow passes it to the scan as a parameter, so that adding, removing or replacing a video re-runs the scan
    and everything after it. ``"missing"`` when ``root`` is not a folder (the scan then says so)."""
    root = Path(root)
    if not root.is_dir():
        return "missing"
    h = hashlib.sha256()
    seen: set[tuple[int, int]] = set()  # folders already walked: a symbolic link loop is walked once

    def walk(folder: str, rel: str, depth: int) -> None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            h.update(f"{rel}\0unreadable {e.errno}\n".encode())
            return
        for e in entries:
            name = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_dir():
                    walk(e.path, name, depth + 1)
                elif depth > 0 and e.is_file() and Path(e.name).suffix.lower() in VIDEO_SUFFIXES:
                    st = e.stat()
                    h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            except OSError:
                h.update(f"{name}\0unreadable\n".encode("utf-8", "surrogateescape"))

    walk(str(root), "", 0)
    return h.hexdigest()[:16]
