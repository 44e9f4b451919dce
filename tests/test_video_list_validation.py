"""Download lists checked when they are read: non-finite seconds, control characters (an embedded newline, NUL, a
byte-order mark inside the file) stop ``avzsl download`` with one line naming the file and the line, before any
output is written; a byte-order mark at the start of the file is dropped; the fixed list then runs. The official
list's ActivityNet segments with non-finite times are reported, not listed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from extractors.sources.download import DownloadListError, read_download_list, read_unavailable
from extractors.sources.manifest import read_manifest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parent.parent
HEADER = "video_id,youtube_id,url,start,end,label,group\n"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")
# the videos' URL: a closed port on 127.0.0.1, so a run of a good list ends quickly with every video unavailable
OPTS = {"url_pattern": "http://127.0.0.1:9/{youtube_id}.mp4", "sections": "pyav", "attempts": 1, "timeout": 2}


def _cli(tmp_path: Path, listing: Path):
    ds = tmp_path / "ds"
    return subprocess.run([sys.executable, "-m", "avzsl", "--quiet", "download", "--list", str(listing),
                           "--manifest", str(ds / "m.csv"), "--unavailable", str(ds / "u.tsv"), "--options",
                           json.dumps(OPTS)], capture_output=True, text=True, cwd=ROOT, timeout=60), ds


BAD = {  # case: (the line 3 of the list, what the message says)
    "inf": ("b,yt2,,inf,,cat,\n", "not a finite number of seconds: 'inf'"),
    "nan": ("b,yt2,,0,nan,cat,\n", "not a finite number of seconds: 'nan'"),
    "overflow": ("b,yt2,,1e400,,cat,\n", "not a finite number of seconds: '1e400'"),
    "newline": ('"b\nc",yt2,,0,10,cat,\n', "video_id 'b\\nc' contains '\\n' (U+000A"),
    "nul": ("b\0,yt2,,0,10,cat,\n", "contains '\\x00' (U+0000"),
    "bom": ("\ufeffb,yt2,,0,10,cat,\n", "contains '\\ufeff' (U+FEFF, a byte-order mark)"),
    "label": ("b,yt2,,0,10,ca\u200bt,\n", "label 'ca\\u200bt' contains '\\u200b' (U+200B"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_line_is_one_message_with_its_line(tmp_path, case):
    line3, says = BAD[case]
    listing = tmp_path / "list.csv"
    listing.write_text(HEADER + "a,yt1,,0,10,dog,\n" + line3 + "d,yt4,,0,10,cat,\n", encoding="utf-8")
    with pytest.raises(DownloadListError) as e:
        read_download_list(listing)
    assert str(e.value).startswith(f"{listing}, line 3: ") and says in str(e.value) and "\n" not in str(e.value)
    r, ds = _cli(tmp_path, listing)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"avzsl download: error: {listing}, line 3: ") and says in lines[0]
    assert lines[0].endswith("fix the list")
    assert not ds.exists()  # nothing written for a bad list
    # the list fixed: the same command runs (every video unavailable: nothing listens on port 9)
    listing.write_text(HEADER + "a,yt1,,0,10,dog,\n" + "b,yt2,,0,10,cat,\n", encoding="utf-8")
    r, ds = _cli(tmp_path, listing)
    assert r.returncode == 0, r.stderr
    assert read_manifest(ds / "m.csv") == [] and [o.video_id for o in read_unavailable(ds / "u.tsv")] == ["a", "b"]


def test_a_quoted_newline_counts_lines_from_where_the_record_starts(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text(HEADER + 'a,yt1,,0,10,"dog\nhouse",\n' + "b,yt2,,inf,,cat,\n", encoding="utf-8")
    with pytest.raises(DownloadListError, match=r", line 2: label 'dog\\nhouse' contains"):
        read_download_list(listing)
    listing.write_text(HEADER + 'a,yt1,,0,10,dog,"g\n1"\n' + "b,yt2,,0,,cat,\n", encoding="utf-8")
    with pytest.raises(DownloadListError, match=r", line 2: group"):
        read_download_list(listing)


def test_bom_at_the_start_is_dropped(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_bytes(b"\xef\xbb\xbf" + (HEADER + "a,yt1,,0.5,10,dog,\n").encode())
    rows = read_download_list(listing)
    assert [r.video_id for r in rows] == ["a"] and rows[0].start == 0.5
    listing.write_bytes(b"\xef\xbb\xbfvideo_id,label,url\n\xef\xbb\xbfa,dog,http://x/a.mp4\n")
    with pytest.raises(DownloadListError, match=r", line 2: video_id '\\ufeffa' contains"):
        read_download_list(listing)


def test_not_utf8_is_one_message(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_bytes(HEADER.encode() + b"a,yt1,,0,10,d\xf6g,\n")
    with pytest.raises(DownloadListError, match=r"list\.csv: not UTF-8 text"):
        read_download_list(listing)


def test_activitynet_segments_not_finite_are_problems():
    from extractors.sources.official import download_items
    from extractors.splits import STAGES, Splits

    videos = {st: [] for st in STAGES}
    videos["stage_1_train"] = [("ytA_0", "Dancing"), ("ytB_0", "Dancing"), ("ytC_0", "Dancing")]
    splits = Splits(["Dancing"], {st: ["Dancing"] for st in STAGES}, videos)
    db = {"ytA": {"annotations": [{"segment": [1.0, float("inf")], "label": "Dancing"}]},
          "ytB": {"annotations": [{"segment": [float("nan"), 3.0], "label": "Dancing"}]},
          "ytC": {"annotations": [{"segment": [2.0, 4.5], "label": "Dancing"}]}}
    items, problems = download_items({"main": splits}, "ActivityNet", db)
    by = {it.video_id: (it.start, it.end) for it in items}
    assert by == {"ytA_0": (None, None), "ytB_0": (None, None), "ytC_0": (2.0, 4.5)}
    assert len(problems) == 2 and all("no valid time range" in p for p in problems)
