"""Hostile UCF-style archives through ``avzsl ucf-archive``: refused with one line before anything is extracted
(links, absolute paths, ``..``, over-deep), nothing written outside the output folder, no fallback to unar after a
refusal, members outside ``UCF-101/<Class>/`` ignored and counted, and a rerun with a fixed archive succeeds."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from extractors.sources.manifest import read_manifest

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("bsdtar") is None or shutil.which("unar") is None,
                                 reason="bsdtar and unar are needed (Debian: libarchive-tools, unar)")]

ROOT = Path(__file__).parent.parent
GOOD = ["UCF-101/Archery/v_Archery_g01_c01.avi", "UCF-101/Archery/v_Archery_g01_c02.avi",
        "UCF-101/HandstandPushups/v_HandStandPushups_g02_c01.avi"]
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")


def _tar(path: Path, members: list[tuple]) -> Path:
    """members: (name,) regular file | (name, "sym"|"hard", target) | (name, "dir")."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            ti = tarfile.TarInfo(m[0])
            if len(m) == 1:
                data = f"clip {m[0]}".encode()
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
                continue
            ti.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE,
                       "chr": tarfile.CHRTYPE}[m[1]]
            ti.linkname = m[2] if len(m) > 2 else ""
            t.addfile(ti)
    return path


def _cli(tmp_path: Path, archive: Path):
    ds = tmp_path / "work" / "ds"
    r = subprocess.run([sys.executable, "-m", "avzsl", "--quiet", "ucf-archive", "--archive", str(archive),
                        "--manifest", str(ds / "manifest.csv"), "--class-names", str(ds / "class_names.csv")],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    return r, ds


def _error_line(r) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("avzsl ucf-archive: error: ")
    return lines[0]


def _snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under root (links not followed) except those under ``skip`` (the output folder)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == skip or skip in d.parents:
            dirnames[:] = []
            continue
        out.update(str(d / n) for n in dirnames + filenames)
    return out


def _rerun_fixed(tmp_path: Path, archive: Path) -> dict:
    _tar(archive, [(n,) for n in GOOD])
    r, ds = _cli(tmp_path, archive)
    assert r.returncode == 0, r.stderr
    assert sorted(x.video_id for x in read_manifest(ds / "manifest.csv")) == sorted(Path(n).stem for n in GOOD)
    assert not [p for p in ds.iterdir() if p.name.startswith(".")]  # no scratch folder left
    return json.loads(r.stdout)


def test_dotdot_members_refused_nothing_outside(tmp_path):
    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [("../../escaped.txt",),
                                                                     ("UCF-101/Archery/../../../../up.avi",)])
    (tmp_path / "work" / "ds").mkdir(parents=True)
    before = _snapshot(tmp_path, tmp_path / "work" / "ds")
    r, ds = _cli(tmp_path, archive)
    line = _error_line(r)
    assert str(archive) in line and "'../../escaped.txt'" in line and "'..'" in line and "nothing extracted" in line
    assert _snapshot(tmp_path, ds) == before  # nothing written outside the output folder
    assert not (ds / "videos").exists() and not (ds / "manifest.csv").exists()
    assert not [p for p in ds.iterdir()]  # no scratch folder, no partial clip
    _rerun_fixed(tmp_path, archive)


def test_absolute_hard_links_refused(tmp_path):
    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [
        ("UCF-101/Archery/v_Archery_g05_c01.avi", "hard", "/etc/passwd"), ("/tmp/avzsl-abs-member.txt",)])
    (tmp_path / "work" / "ds").mkdir(parents=True)
    before = _snapshot(tmp_path, tmp_path / "work" / "ds")
    r, ds = _cli(tmp_path, archive)
    line = _error_line(r)
    assert "'UCF-101/Archery/v_Archery_g05_c01.avi' is a hard link to '/etc/passwd'" in line
    assert _snapshot(tmp_path, ds) == before and not (ds / "videos").exists()
    assert not Path("/tmp/avzsl-abs-member.txt").exists()
    # the absolute member alone is refused too
    _tar(archive, [(n,) for n in GOOD] + [("/tmp/avzsl-abs-member.txt",)])
    assert "has an absolute path" in _error_line(_cli(tmp_path, archive)[0])
    assert not Path("/tmp/avzsl-abs-member.txt").exists()
    _rerun_fixed(tmp_path, archive)


def test_symlink_named_like_a_clip_refused_and_never_listed(tmp_path):
    archive = tmp_path / "UCF101.tar"
    first = _rerun_fixed(tmp_path, archive)  # a good run first: its manifest must survive the refusal unchanged
    assert first["videos"] == 3
    ds = tmp_path / "work" / "ds"
    manifest_before = (ds / "manifest.csv").read_text()
    _tar(archive, [(n,) for n in GOOD] + [("UCF-101/Archery/v_Archery_g07_c01.avi", "sym", "/etc/passwd")])
    line = _error_line(_cli(tmp_path, archive)[0])
    assert "'UCF-101/Archery/v_Archery_g07_c01.avi' is a symbolic link to '/etc/passwd'" in line
    clip = ds / "videos" / "Archery" / "v_Archery_g07_c01.avi"
    assert not clip.exists() and not clip.is_symlink()
    assert (ds / "manifest.csv").read_text() == manifest_before
    # a symbolic link left in videos/ (by hand or an older version) is never listed, and a clip of the archive with
    # a link's name replaces the link
    clip.symlink_to("/etc/passwd")
    (ds / "videos" / "Archery" / "v_Archery_g01_c01.avi").unlink()
    (ds / "videos" / "Archery" / "v_Archery_g01_c01.avi").symlink_to("/etc/passwd")
    _rerun_fixed(tmp_path, archive)
    ids = {x.video_id for x in read_manifest(ds / "manifest.csv")}
    assert "v_Archery_g07_c01" not in ids
    assert not (ds / "videos" / "Archery" / "v_Archery_g01_c01.avi").is_symlink()
    assert Path("/etc/passwd").read_bytes() != b"clip UCF-101/Archery/v_Archery_g01_c01.avi"


def test_device_member_refused(tmp_path):
    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [("UCF-101/Archery/v_Archery_g09_c01.avi", "chr")])
    line = _error_line(_cli(tmp_path, archive)[0])
    assert "'UCF-101/Archery/v_Archery_g09_c01.avi' is a device, fifo or socket" in line
    _rerun_fixed(tmp_path, archive)


def test_members_outside_the_layout_ignored_and_counted(tmp_path):
    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [
        ("UCF-101/README.txt",), ("v_Archery_g03_c01.avi",), ("other/Archery/v_Archery_g04_c01.avi",),
        ("UCF-101/Archery/deeper/v_Archery_g05_c01.avi",), ("UCF-101/Archery/notes.txt",),
        ("UCF-101/Basketball/v_Archery_g06_c01.avi",), ("UCF-101/extra", "dir")])
    r, ds = _cli(tmp_path, archive)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["videos"] == 3 and out["ignored"] == 6 and out["other_classes"] == 0
    assert "6 member(s) outside UCF-101/<Class>/ ignored" in r.stderr
    files = sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*") if not p.is_dir())
    assert files == ["class_names.csv", "manifest.csv", "videos/Archery/v_Archery_g01_c01.avi",
                     "videos/Archery/v_Archery_g01_c02.avi", "videos/HandstandPushups/v_HandStandPushups_g02_c01.avi"]


def test_1500_folders_deep_is_one_line(tmp_path):
    deep = "/".join(["d"] * 1500) + "/v_Archery_g01_c01.avi"
    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [(deep,)])
    line = _error_line(_cli(tmp_path, archive)[0])
    assert "1501 levels deep, more than the limit of 8" in line and len(line) < 600
    assert not (tmp_path / "work" / "ds" / "videos").exists()
    _rerun_fixed(tmp_path, archive)


def test_refusal_is_final_without_bsdtar_too(tmp_path, monkeypatch):
    """Where bsdtar is missing, lsar lists and the same checks refuse; unar never runs after a refusal."""
    from extractors.sources import ucf_archive as U

    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD] + [("../../escaped.txt",)])
    which = shutil.which
    monkeypatch.setattr(U.shutil, "which", lambda name: None if name == "bsdtar" else which(name))
    ran = []
    real_run = U._run
    monkeypatch.setattr(U, "_run", lambda cmd: ran.append(cmd[0]) or real_run(cmd))
    ds = tmp_path / "work" / "ds"
    with pytest.raises(U.UnsafeArchive, match=r"'\.\./\.\./escaped\.txt' climbs out"):
        U.ucf_from_archive(archive, ds / "videos", ds / "manifest.csv", ds / "class_names.csv")
    assert ran == ["lsar"] and not (tmp_path / "escaped.txt").exists() and not (ds / "videos").exists()
    _tar(archive, [(n,) for n in GOOD] + [("UCF-101/Archery/v_Archery_g02_c01.avi", "hard", "/etc/passwd")])
    with pytest.raises(U.UnsafeArchive, match="is a hard link"):
        U.ucf_from_archive(archive, ds / "videos", ds / "manifest.csv", ds / "class_names.csv")
    _tar(archive, [(n,) for n in GOOD])
    out = U.ucf_from_archive(archive, ds / "videos", ds / "manifest.csv", ds / "class_names.csv")
    assert out["videos"] == 3 and out["tool"] == "unar"


def test_recursion_error_is_one_line(tmp_path, monkeypatch):
    from extractors.sources import ucf_archive as U

    archive = _tar(tmp_path / "UCF101.tar", [(n,) for n in GOOD])

    def boom(*a, **k):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(U, "extract_archive", boom)
    ds = tmp_path / "ds"
    with pytest.raises(U.ArchiveError, match="nested too deeply") as e:
        U.ucf_from_archive(archive, ds / "videos", ds / "manifest.csv", ds / "class_names.csv")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
