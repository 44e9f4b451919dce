"""UCF101 from its distributed archive (``UCF101.rar``: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``).

The archive is opened with a real archive program: ``bsdtar`` (libarchive: RAR 4 and RAR 5, but not RAR 4 *solid*
archives) and, when bsdtar cannot read it, ``unar`` (RAR 4 including solid; the Debian 1.10.1 build fails on some
RAR 5 files). With bsdtar only the members of the wanted classes are extracted; the unar fallback extracts all and
keeps the wanted ones. Any archive format these programs read works (zip and tar too).

Manifest: ``video_id`` = the file's stem (``v_ApplyEyeMakeup_g08_c01``, as in the benchmark's split files),
``label`` = the class folder (UCF spells one class differently in folder and file names:
``HandstandPushups`` / ``v_HandStandPushups_...``; the folder wins), ``group`` = ``<Class>_gXX``: the clips of one
group are cut from one source video, so a split must keep them together.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from extractors.sources.manifest import ManifestRow, write_class_names, write_manifest

UCF_FILE = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.(?:avi|mp4)$", re.IGNORECASE)


class ArchiveError(RuntimeError):
    pass


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def list_members(archive: str | Path) -> list[str]:
    """Member names as bsdtar lists them; ArchiveError when bsdtar is missing or cannot read the archive."""
    if not shutil.which("bsdtar"):
        raise ArchiveError("bsdtar not found (Debian: libarchive-tools)")
    r = _run(["bsdtar", "-tf", str(archive)])
    if r.returncode != 0:
        raise ArchiveError(f"bsdtar cannot list {archive}: {r.stderr.strip()}")
    return [line for line in r.stdout.splitlines() if line and not line.endswith("/")]


def extract_archive(archive: str | Path, dest: str | Path, keep: Callable[[str], bool] | None = None) -> str:
    """Extract ``archive`` into ``dest`` (members for which ``keep(name)`` is true; default all); returns the
    program used. bsdtar first, unar when bsdtar fails."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"archive not found: {archive}")
    dest.mkdir(parents=True, exist_ok=True)
    errors = []
    try:
        members = list_members(archive)
        chosen = [m for m in members if keep is None or keep(m)]
        if not chosen:
            return "bsdtar"
        with tempfile.NamedTemporaryFile("w", suffix=".lst", delete=False) as f:
            f.write("\n".join(_escape(m) for m in chosen) + "\n")
        try:
            r = _run(["bsdtar", "-xf", str(archive), "-C", str(dest), "-T", f.name])
        finally:
            Path(f.name).unlink()
        if r.returncode == 0:
            return "bsdtar"
        errors.append(f"bsdtar: {r.stderr.strip()}")
    except ArchiveError as e:
        errors.append(str(e))
    if not shutil.which("unar"):
        raise ArchiveError("; ".join([*errors, "unar not found (Debian: unar)"]))
    with tempfile.TemporaryDirectory(dir=dest, prefix=".unar.") as tmp:
        r = _run(["unar", "-q", "-f", "-D", "-o", tmp, str(archive)])
        if r.returncode != 0:
            raise ArchiveError("; ".join([*errors, f"unar: {(r.stderr or r.stdout).strip()}"]))
        for p in sorted(Path(tmp).rglob("*")):
            rel = p.relative_to(tmp).as_posix()
            if (p.is_file() or p.is_symlink()) and (keep is None or keep(rel)):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(p), target)
    return "unar"


def _escape(name: str) -> str:
    """bsdtar's -T reads patterns: escape the pattern characters of a literal name."""
    return re.sub(r"([\\*?\[])", r"\\\1", name)


def _wanted(classes: Iterable[str] | None) -> Callable[[str], bool]:
    want = None if classes is None else {c.lower() for c in classes}

    def keep(name: str) -> bool:
        m = UCF_FILE.match(Path(name).name)
        if m is None:
            return False
        if want is None:
            return True
        parent = Path(name).parent.name.lower()
        return m["cls"].lower() in want or parent in want

    return keep


def ucf_from_archive(archive: str | Path, videos: str | Path, manifest: str | Path, class_names: str | Path,
                     classes: Iterable[str] | None = None, descriptions: dict[str, str] | None = None) -> dict:
    """Extract the UCF clips of ``classes`` (default all) into ``videos/<Class>/`` and write the manifest and the
    class-name table. Returns counts and the program used."""
    videos, manifest = Path(videos), Path(manifest)
    classes = list(classes) if classes else None
    staging = videos.parent / f".{videos.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    tool = extract_archive(archive, staging, _wanted(classes))
    rows = []
    for p in sorted(staging.rglob("*")):
        m = UCF_FILE.match(p.name)
        if not p.is_file() or m is None:
            continue
        label = p.parent.name if p.parent != staging and p.parent.name.lower() == m["cls"].lower() else m["cls"]
        target = videos / label / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        p.replace(target)
        rows.append(ManifestRow(p.stem, Path("videos", label, p.name).as_posix()
                                if videos.parent.resolve() == manifest.parent.resolve() else str(target.resolve()),
                                label, f"{label}_g{m['group']}"))
    shutil.rmtree(staging, ignore_errors=True)
    if not rows:
        raise ArchiveError(f"{archive}: no v_<Class>_gXX_cYY.avi files"
                           + (f" of the classes {sorted(classes)[:5]}..." if classes else ""))
    found = {r.label.lower() for r in rows}
    missing = sorted(c for c in classes or () if c.lower() not in found)
    rows.sort(key=lambda r: r.video_id)
    write_manifest(manifest, rows)
    descriptions = descriptions or {}
    names = sorted({r.label for r in rows})
    write_class_names(class_names, [{"original": n, "manual": descriptions.get(n, _words(n))} for n in names])
    return {"videos": len(rows), "classes": len(names), "missing_classes": missing, "tool": tool}


def _words(name: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup`` (the text to embed unless described otherwise)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
