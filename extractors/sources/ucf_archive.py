"""UCF101 from its distributed archive (``UCF101.rar``: ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``).

The archive is opened with a real archive program: ``bsdtar`` (libarchive: RAR 4 and RAR 5, but not RAR 4 *solid*
archives) and, when bsdtar cannot read it, ``unar`` (RAR 4 including solid; the Debian 1.10.1 build fails on some
RAR 5 files). Any archive format these programs read works (zip and tar too).

Safety (an archive is extracted safely or not at all): every member is listed first (``bsdtar -tf`` / ``-tvf``, or
``lsar -j`` where bsdtar cannot read the archive) and the whole archive is refused, before anything is extracted,
when a member is a symbolic link, a hard link or a device / fifo / socket, when its path is absolute or climbs
out with ``..``, when it is more than ``MAX_DEPTH`` folders deep, or when there are more than ``MAX_MEMBERS``
members. A refusal is final: no other program is tried after it. The chosen members are extracted into a scratch
folder inside the output folder, and only regular files are moved into place from there; the scratch folder is
removed afterwards. For UCF101 only ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` members are taken; the others are
ignored and counted (``ignored`` in the result, and a log line).

Manifest: ``video_id`` = the file's stem (``v_ApplyEyeMakeup_g08_c01``, as in the benchmark's split files),
``label`` = the class folder (UCF spells one class differently in folder and file names:
``HandstandPushups`` / ``v_HandStandPushups_...``; the folder wins), ``group`` = ``<Class>_gXX``: the clips of one
group are cut from one source video, so a split must keep them together.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from extractors.sources.manifest import ManifestRow, write_class_names, write_manifest

log = logging.getLogger("avzsl.ucf_archive")

UCF_FILE = re.compile(r"^v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.(?:avi|mp4)$", re.IGNORECASE)
UCF_ROOT = "UCF-101"
CLASS_DIR = re.compile(r"^[A-Za-z0-9]+$")
MAX_DEPTH = 8  # folders in a member's path (UCF101: UCF-101/<Class>/<file> = 3)
MAX_MEMBERS = 200_000  # UCF101 has 13,320 clips and 102 folders


class ArchiveError(RuntimeError, ValueError):
    """An archive that cannot be read or is refused (a ValueError: the CLI prints it as one line)."""


class UnsafeArchive(ArchiveError):
    """A member that is not extracted on any account; never followed by another program's attempt."""


@dataclass(frozen=True)
class Member:
    name: str  # as listed (bsdtar escapes non-printable characters, e.g. ``\\n``)
    kind: str  # file | dir | symlink | hardlink | device | unknown
    link: str = ""


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(name: str, limit: int = 120) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "…")


_BSDTAR_KIND = {"-": "file", "d": "dir", "l": "symlink", "h": "hardlink", "c": "device", "b": "device",
                "p": "device", "s": "device"}


def _bsdtar_entries(archive: Path) -> list[Member]:
    names = _run(["bsdtar", "-tf", str(archive)])
    if names.returncode != 0:
        raise ArchiveError(f"bsdtar cannot list {archive}: {_one_line(names.stderr)}")
    verbose = _run(["bsdtar", "-tvf", str(archive)])
    if verbose.returncode != 0:
        raise ArchiveError(f"bsdtar cannot list {archive}: {_one_line(verbose.stderr)}")
    nl, vl = names.stdout.splitlines(), verbose.stdout.splitlines()
    if len(nl) != len(vl):
        raise UnsafeArchive(f"{archive}: refused, nothing extracted: its listings disagree ({len(nl)} names, "
                            f"{len(vl)} entries)")
    out = []
    for name, line in zip(nl, vl):
        kind = _BSDTAR_KIND.get(line[:1], "unknown")
        link = ""
        if kind in ("file", "dir") and not line.endswith(" " + name):
            kind = "unknown"  # a name that does not end its listing line: a link in disguise or an odd entry
        elif kind == "symlink":
            link = line.split(" -> ", 1)[-1] if " -> " in line else ""
        elif kind == "hardlink":
            link = line.split(" link to ", 1)[-1] if " link to " in line else ""
        out.append(Member(name, kind, link))
    return out


def _lsar_entries(archive: Path) -> list[Member]:
    if not shutil.which("lsar"):
        raise ArchiveError("lsar not found (Debian: unar)")
    r = _run(["lsar", "-j", str(archive)])
    try:
        contents = json.loads(r.stdout)["lsarContents"] if r.returncode == 0 else None
    except (ValueError, KeyError, TypeError):
        contents = None
    if contents is None:
        raise ArchiveError(f"lsar cannot list {archive}: {_one_line(r.stderr or r.stdout)}")
    out = []
    for e in contents:
        name = str(e.get("XADFileName", ""))
        mode = e.get("XADPosixPermissions")
        fmt = stat.S_IFMT(mode) if isinstance(mode, int) else 0
        if e.get("XADIsHardLink"):
            kind = "hardlink"
        elif e.get("XADIsLink") or fmt == stat.S_IFLNK:
            kind = "symlink"
        elif any(e.get(k) for k in ("XADIsCharacterDevice", "XADIsBlockDevice", "XADIsFIFO")) or \
                fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            kind = "device"
        elif e.get("XADIsDirectory") or fmt == stat.S_IFDIR:
            kind = "dir"
        else:
            kind = "file"
        out.append(Member(name, kind, str(e.get("XADLinkDestination", ""))))
    return out


def _parts(name: str) -> list[str]:
    return [p for p in re.split(r"[/\\]", name) if p not in ("", ".")]


def check_members(archive: str | Path, members: list[Member]) -> None:
    """Refuse (UnsafeArchive, one line naming the archive and the member) what is never extracted."""
    head = f"{archive}: refused, nothing extracted:"
    tail = "; only regular files and folders under relative paths are extracted (use the original archive)"
    if len(members) > MAX_MEMBERS:
        raise UnsafeArchive(f"{head} {len(members)} members, more than the limit of {MAX_MEMBERS}")
    for m in members:
        what = {"symlink": "a symbolic link", "hardlink": "a hard link", "device": "a device, fifo or socket",
                "unknown": "an entry of unknown type"}.get(m.kind)
        if what:
            to = f" to {_short(m.link, 80)}" if m.link else ""
            raise UnsafeArchive(f"{head} member {_short(m.name)} is {what}{to}{tail}")
        if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name):
            raise UnsafeArchive(f"{head} member {_short(m.name)} has an absolute path{tail}")
        parts = _parts(m.name)
        if ".." in parts:
            raise UnsafeArchive(f"{head} member {_short(m.name)} climbs out of the folder with '..'{tail}")
        if len(parts) > MAX_DEPTH:
            raise UnsafeArchive(f"{head} member {_short(m.name)} is {len(parts)} levels deep, more than the limit "
                                f"of {MAX_DEPTH} (not a UCF101 archive?)")


def list_entries(archive: str | Path) -> tuple[list[Member], str]:
    """Every member with its type, and the program that listed it (bsdtar, else lsar); ArchiveError when neither
    can read the archive. Not checked: see ``check_members``."""
    archive = Path(archive)
    errors = []
    if shutil.which("bsdtar"):
        try:
            return _bsdtar_entries(archive), "bsdtar"
        except UnsafeArchive:
            raise
        except ArchiveError as e:
            errors.append(str(e))
    else:
        errors.append("bsdtar not found (Debian: libarchive-tools)")
    try:
        return _lsar_entries(archive), "lsar"
    except ArchiveError as e:
        errors.append(str(e))
    raise ArchiveError("; ".join(errors))


def list_members(archive: str | Path) -> list[str]:
    """Names of the non-folder members, after the safety check (UnsafeArchive when refused)."""
    members, _ = list_entries(archive)
    check_members(archive, members)
    return [m.name for m in members if m.kind != "dir"]


def _escape(name: str) -> str:
    """bsdtar's -T reads patterns: escape the pattern characters of a literal name."""
    return re.sub(r"([\\*?\[])", r"\\\1", name)


def _printable(name: str) -> bool:
    return name.isprintable() and "\\" not in name


def _place(src: Path, dest: Path, rel: str) -> bool:
    """Move the regular file ``src`` to ``dest/rel``; nothing else (links, devices, missing) is moved."""
    try:
        st = os.lstat(src)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    dest.mkdir(parents=True, exist_ok=True)
    target = dest
    for part in _parts(rel)[:-1]:
        target = target / part
        if target.is_symlink():
            raise ArchiveError(f"{target} is a symbolic link; remove it and run again (nothing is written through "
                               "links)")
        target.mkdir(exist_ok=True)
    target = target / _parts(rel)[-1]
    if target.is_symlink() or target.is_dir():
        if target.is_dir() and not target.is_symlink():
            raise ArchiveError(f"{target} is a folder where the archive has a file; remove it and run again")
        target.unlink()
    os.replace(src, target)
    return True


def extract_archive(archive: str | Path, dest: str | Path, keep: Callable[[str], bool] | None = None) -> str:
    """Extract the regular-file members of ``archive`` for which ``keep(name)`` is true (default all) into
    ``dest``; returns the program used. The archive is listed and checked first (``check_members``: a refusal is
    final); bsdtar extracts when it can read the archive, else unar; either writes into a scratch folder inside
    ``dest``, from which only regular files are moved into place."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ArchiveError(f"archive not found: {archive}")
    members, lister = list_entries(archive)
    check_members(archive, members)
    chosen = [m.name for m in members if m.kind == "file" and _printable(m.name) and (keep is None or keep(m.name))]
    dest.mkdir(parents=True, exist_ok=True)
    if not chosen:
        return lister if lister == "bsdtar" else "unar"
    errors = []
    if lister == "bsdtar":
        tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".bsdtar."))
        try:
            lst = tmp / ".members.lst"
            lst.write_text("\n".join(_escape(m) for m in chosen) + "\n")
            (tmp / "x").mkdir()
            r = _run(["bsdtar", "-xf", str(archive), "-C", str(tmp / "x"), "--no-same-owner", "-T", str(lst)])
            if r.returncode == 0:
                for name in chosen:
                    _place(tmp / "x" / name, dest, name)
                return "bsdtar"
            errors.append(f"bsdtar: {_one_line(r.stderr)}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # bsdtar listed the archive but cannot extract it (e.g. a RAR 4 solid archive): unar, after its own listing
        # passes the same check
        try:
            members = _lsar_entries(archive)
        except ArchiveError as e:
            raise ArchiveError("; ".join([*errors, str(e)])) from None
        check_members(archive, members)
        chosen = [m.name for m in members if m.kind == "file" and _printable(m.name)
                  and (keep is None or keep(m.name))]
    if not shutil.which("unar"):
        raise ArchiveError("; ".join([*errors, f"{archive}: unar not found (Debian: unar)"]))
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".unar."))
    try:
        r = _run(["unar", "-q", "-f", "-D", "-o", str(tmp), str(archive)])
        if r.returncode != 0:
            raise ArchiveError("; ".join([*errors, f"unar cannot extract {archive}: {_one_line(r.stderr or r.stdout)}"]))
        for name in chosen:
            _place(tmp / name, dest, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "unar"


def _layout(name: str) -> tuple[str, str] | None:
    """``(class folder, file name)`` of a member ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi``, else None."""
    parts = _parts(name)
    if len(parts) != 3 or parts[0] != UCF_ROOT or not CLASS_DIR.match(parts[1]):
        return None
    m = UCF_FILE.match(parts[2])
    if m is None or m["cls"].lower() != parts[1].lower():
        return None
    return parts[1], parts[2]


def ucf_from_archive(archive: str | Path, videos: str | Path, manifest: str | Path, class_names: str | Path,
                     classes: Iterable[str] | None = None, descriptions: dict[str, str] | None = None) -> dict:
    """Extract the UCF clips of ``classes`` (default all) into ``videos/<Class>/`` and write the manifest and the
    class-name table. Returns counts (``ignored``: members outside ``UCF-101/<Class>/``) and the program used."""
    videos, manifest = Path(videos), Path(manifest)
    classes = list(classes) if classes else None
    want = None if classes is None else {c.lower() for c in classes}
    counts = {"ignored": 0, "other_classes": 0}
    examples: list[str] = []

    def keep(name: str) -> bool:
        found = _layout(name)
        if found is None:
            counts["ignored"] += 1
            if len(examples) < 3:
                examples.append(name)
            return False
        if want is not None and found[0].lower() not in want:
            counts["other_classes"] += 1
            return False
        return True

    staging = videos.parent / f".{videos.name}.extracting"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        tool = extract_archive(archive, staging, keep)
        rows = _move_clips(staging, videos, manifest)
    except RecursionError:
        raise ArchiveError(f"{archive}: nested too deeply to be read (Python's recursion limit); not a UCF101 "
                           "archive?") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if counts["ignored"]:
        log.info("%s: %d member(s) outside %s/<Class>/ ignored, e.g. %s", archive, counts["ignored"], UCF_ROOT,
                 ", ".join(_short(e, 80) for e in examples))
    if not rows:
        raise ArchiveError(f"{archive}: no {UCF_ROOT}/<Class>/v_<Class>_gXX_cYY.avi files"
                           + (f" of the classes {sorted(classes)[:5]}..." if classes else "")
                           + f" ({counts['ignored']} other members ignored); is it UCF101.rar?")
    found = {r.label.lower() for r in rows}
    missing = sorted(c for c in classes or () if c.lower() not in found)
    rows.sort(key=lambda r: r.video_id)
    write_manifest(manifest, rows)
    descriptions = descriptions or {}
    names = sorted({r.label for r in rows})
    write_class_names(class_names, [{"original": n, "manual": descriptions.get(n, _words(n))} for n in names])
    return {"videos": len(rows), "classes": len(names), "missing_classes": missing, "tool": tool, **counts}


def _move_clips(staging: Path, videos: Path, manifest: Path) -> list[ManifestRow]:
    """The regular files ``staging/UCF-101/<Class>/<clip>`` moved to ``videos/<Class>/<clip>``: their rows."""
    rows = []
    root = staging / UCF_ROOT
    if not root.is_dir() or root.is_symlink():
        return rows
    relative = videos.parent.resolve() == manifest.parent.resolve()
    for cls_dir in sorted(root.iterdir()):
        if cls_dir.is_symlink() or not cls_dir.is_dir():
            continue
        for p in sorted(cls_dir.iterdir()):
            found = _layout(f"{UCF_ROOT}/{cls_dir.name}/{p.name}")
            if found is None or not _place(p, videos, f"{found[0]}/{found[1]}"):
                continue
            label, name = found
            target = videos / label / name
            if not stat.S_ISREG(os.lstat(target).st_mode):  # never list a link
                continue
            m = UCF_FILE.match(name)
            rows.append(ManifestRow(target.stem, Path("videos", label, name).as_posix() if relative
                                    else str(target.resolve()), label, f"{label}_g{m['group']}"))
    return rows


def _words(name: str) -> str:
    """``ApplyEyeMakeup`` -> ``apply eye makeup`` (the text to embed unless described otherwise)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
