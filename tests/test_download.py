"""Downloads through yt-dlp from a real HTTP server on 127.0.0.1 that stands in for YouTube: permanent and transient
errors, the decode check, resuming, sections, coverage; UCF101-style archives extracted with a real archive tool."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
from media_fixtures import write_av

from extractors.sources.download import (
    DownloadOptions,
    DownloadRow,
    coverage,
    coverage_statement,
    download,
    merge_shards,
    read_coverage,
    read_download_list,
    read_unavailable,
    write_coverage,
    write_download_list,
)
from extractors.sources.manifest import read_manifest, resolve_media

pytestmark = pytest.mark.timeout(60)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _handler(server_state):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - the http.server interface
            name = self.path.lstrip("/").split("?")[0]
            server_state["hits"].append(name)
            plan = server_state["plans"].get(name, [404])
            n = sum(h == name for h in server_state["hits"])
            step = plan[min(n, len(plan)) - 1]
            if isinstance(step, int):
                self.send_error(step)
                return
            if step == "slow":  # answers after the client's timeout
                time.sleep(1.5)
            data = server_state["files"][name]
            if step == "trunc":
                data = data[: len(data) // 3]
            rng = self.headers.get("Range")
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            self.send_response(206 if rng else 200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            try:
                self.wfile.write(data[start:])
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

    return H


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    return {i: write_av(d / f"{i}.mp4", seconds=4.0, fps=10, seed=i).read_bytes() for i in range(3)}


@pytest.fixture
def server(clips):
    state = {"hits": [], "plans": {}, "files": {}}
    srv = _Server(("127.0.0.1", 0), _handler(state))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    state["pattern"] = f"http://127.0.0.1:{srv.server_address[1]}/{{youtube_id}}.mp4"
    state["serve"] = lambda name, i=0, plan=("ok",): (state["files"].__setitem__(f"{name}.mp4", clips[i]),
                                                     state["plans"].__setitem__(f"{name}.mp4", list(plan)))
    yield state
    srv.shutdown()
    srv.server_close()


def _opts(server, **kw):
    sleeps = []
    kw = {"sections": "pyav", "timeout": 5, **kw}
    opts = DownloadOptions(url_pattern=server["pattern"], attempts=3, backoff=0.5, sleep=sleeps.append, **kw)
    return opts, sleeps


def _run(tmp_path, rows, opts, **kw):
    lst = tmp_path / "list.csv"
    write_download_list(lst, rows)
    out = tmp_path / "ds"
    counts = download(lst, out / "manifest.csv", out / "unavailable.tsv", options=opts, **kw)
    return counts, read_manifest(out / "manifest.csv"), {o.video_id: o for o in read_unavailable(out / "unavailable.tsv")}


def _duration(path):
    with av.open(str(path)) as c:
        return float(c.duration / av.time_base)


def test_download_list_round_trip(tmp_path):
    rows = [DownloadRow("a", "dog", youtube_id="yt1", start=1.5, end=11.5),
            DownloadRow("b", "cat", url="http://h/x.mp4", group="g1")]
    write_download_list(tmp_path / "l.csv", rows)
    assert read_download_list(tmp_path / "l.csv") == rows
    assert rows[0].source_url("https://example.org/{youtube_id}") == "https://example.org/yt1"


def test_error_classification():
    from yt_dlp.utils import DownloadError

    from extractors.sources.download import classify

    for msg in ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
                "ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video",
                "ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate"):
        assert classify(DownloadError(msg)).permanent, msg
    for msg in ("ERROR: [youtube] abc: Read timed out.", "ERROR: unable to download video data: <urlopen error "
                "[Errno 111] Connection refused>"):
        assert not classify(DownloadError(msg)).permanent, msg


@pytest.mark.slow
def test_404_unavailable_at_once_and_ok_clip_cut(tmp_path, server):
    server["serve"]("good", 0)
    server["serve"]("secret", 0, plan=(403,))
    opts, sleeps = _opts(server)
    rows = [DownloadRow("v1", "dog", youtube_id="good", start=1.0, end=3.0),
            DownloadRow("v2", "cat", youtube_id="gone"), DownloadRow("v3", "cat", youtube_id="secret")]
    counts, manifest, bad = _run(tmp_path, rows, opts)
    assert [r.video_id for r in manifest] == ["v1"]
    clip = resolve_media(tmp_path / "ds" / "manifest.csv", manifest[0])
    assert clip == tmp_path / "ds" / "videos" / "v1.mp4" and abs(_duration(clip) - 2.0) < 0.35
    assert bad["v2"].kind == "permanent" and "404" in bad["v2"].reason and bad["v2"].attempts == 1
    assert server["hits"].count("gone.mp4") == 1 and sleeps == []
    assert bad["v3"].kind == "permanent" and "403" in bad["v3"].reason and server["hits"].count("secret.mp4") == 1
    assert counts["available"] == 1 and counts["unavailable"] == 2


@pytest.mark.slow
def test_two_503_then_200_with_backoff(tmp_path, server):
    server["serve"]("flaky", 1, plan=(503, 503, "ok"))
    opts, sleeps = _opts(server)
    counts, manifest, bad = _run(tmp_path, [DownloadRow("v", "dog", youtube_id="flaky")], opts)
    assert [r.video_id for r in manifest] == ["v"] and not bad
    assert sleeps == [0.5, 1.0]  # exponential back-off between the three attempts


@pytest.mark.slow
def test_503_forever_recorded_transient_and_retried_on_rerun(tmp_path, server):
    server["serve"]("down", 1, plan=(503,))
    opts, sleeps = _opts(server)
    _, manifest, bad = _run(tmp_path, [DownloadRow("v", "dog", youtube_id="down")], opts)
    assert not manifest and bad["v"].kind == "transient" and bad["v"].attempts == 3 and "503" in bad["v"].reason
    server["plans"]["down.mp4"] = ["ok"]
    _, manifest, bad = _run(tmp_path, [DownloadRow("v", "dog", youtube_id="down")], opts)
    assert [r.video_id for r in manifest] == ["v"] and not bad


@pytest.mark.slow
def test_timeout_is_retried(tmp_path, server):
    server["serve"]("slow", 1, plan=("slow", "ok"))
    opts, sleeps = _opts(server, timeout=0.5)
    _, manifest, bad = _run(tmp_path, [DownloadRow("v", "dog", youtube_id="slow")], opts)
    assert [r.video_id for r in manifest] == ["v"] and not bad and sleeps == [0.5]


@pytest.mark.slow
def test_truncated_file_caught_by_decode_check(tmp_path, server):
    server["serve"]("cut", 2, plan=("trunc",))
    server["serve"]("heal", 2, plan=("trunc", "ok"))
    opts, _ = _opts(server)
    rows = [DownloadRow("t", "dog", youtube_id="cut"), DownloadRow("h", "dog", youtube_id="heal")]
    _, manifest, bad = _run(tmp_path, rows, opts)
    assert [r.video_id for r in manifest] == ["h"]
    assert bad["t"].kind == "transient" and bad["t"].attempts == 3
    assert bad["t"].reason.startswith("undecodable")
    assert not (tmp_path / "ds" / "videos" / "t.mp4").exists()
    assert not list((tmp_path / "ds" / "videos" / ".partial").glob("*"))  # no leftovers


@pytest.mark.slow
def test_rerun_downloads_nothing(tmp_path, server):
    server["serve"]("a", 0)
    opts, _ = _opts(server)
    rows = [DownloadRow("a", "dog", youtube_id="a", start=0.5, end=2.5), DownloadRow("b", "cat", youtube_id="nope")]
    _run(tmp_path, rows, opts)
    hits = len(server["hits"])
    counts, manifest, bad = _run(tmp_path, rows, opts)
    assert len(server["hits"]) == hits  # neither the clip nor the permanent 404 is asked for again
    assert counts["skipped"] == 1 and counts["downloaded"] == 0 and [r.video_id for r in manifest] == ["a"]
    assert bad["b"].kind == "permanent"
    opts.retry_unavailable = True
    _run(tmp_path, rows, opts)
    assert server["hits"][hits:] == ["nope.mp4"]


@pytest.mark.slow
def test_shards_merge_and_coverage(tmp_path, server):
    for name in ("a", "b", "c"):
        server["serve"](name, 0)
    opts, _ = _opts(server)
    rows = [DownloadRow("a", "dog", youtube_id="a"), DownloadRow("b", "dog", youtube_id="b"),
            DownloadRow("x", "dog", youtube_id="x404"), DownloadRow("c", "cat", youtube_id="c")]
    lst = tmp_path / "list.csv"
    write_download_list(lst, rows)
    ds = tmp_path / "ds"
    for s in range(2):
        download(lst, ds / "download" / f"{s}.csv", ds / "download" / f"{s}.unavailable.tsv",
                 videos=ds / "videos", options=opts, shard=s, shards=2)
    merge_shards([ds / "download" / f"{s}.csv" for s in range(2)],
                 [ds / "download" / f"{s}.unavailable.tsv" for s in range(2)],
                 ds / "manifest.csv", ds / "unavailable.tsv", ds / "class_names.csv")
    manifest = read_manifest(ds / "manifest.csv")
    assert sorted(r.video_id for r in manifest) == ["a", "b", "c"]
    assert all(resolve_media(ds / "manifest.csv", r).is_file() for r in manifest)
    assert [o.video_id for o in read_unavailable(ds / "unavailable.tsv")] == ["x"]
    # per class only (no split folder yet)
    cov = coverage(lst, ds / "manifest.csv", tmp_path / "no-splits")
    assert cov == [{"split": "all", "label": "cat", "available": 1, "listed": 1},
                   {"split": "all", "label": "dog", "available": 2, "listed": 3}]
    # with a split folder: per stage and class too
    from extractors.splits import STAGES

    sp = tmp_path / "splits"
    sp.mkdir()
    classes = {"stage_1_train": "cat dog", "stage_1_val_seen": "cat dog", "stage_1_val_unseen": "bird",
               "stage_2_train": "bird cat dog", "stage_2_test_seen": "cat dog", "stage_2_test_unseen": "fish"}
    videos = {"stage_1_train": "a,dog x,dog c,cat", "stage_1_val_seen": "vs1,dog vs2,cat", "stage_1_val_unseen": "vu,bird",
              "stage_2_train": "a,dog x,dog c,cat vu,bird", "stage_2_test_seen": "ts1,dog ts2,cat",
              "stage_2_test_unseen": "tu,fish"}
    (sp / "all_class.txt").write_text("bird\ncat\ndog\nfish\n")
    for st in STAGES:
        (sp / f"{st}.txt").write_text("\n".join(classes[st].split()) + "\n")
        (sp / f"{st}.csv").write_text("filename,label\n" + "\n".join(videos[st].split()) + "\n")
    cov = coverage(lst, ds / "manifest.csv", sp)
    by = {(r["split"], r["label"]): (r["available"], r["listed"]) for r in cov}
    assert by[("stage_1_train", "dog")] == (1, 2) and by[("stage_1_train", "cat")] == (1, 1)
    assert by[("stage_2_test_unseen", "fish")] == (0, 1) and by[("stage_1_val_seen", "dog")] == (0, 1)
    assert by[("all", "dog")] == (2, 3)
    write_coverage(cov, ds / "coverage.tsv", ds / "coverage.md")
    md = (ds / "coverage.md").read_text()
    assert "## All listed videos, per class: 3 / 4 (75.0 %)" in md and "| dog | 1 | 2 | 50.0 % |" in md
    assert (ds / "coverage.tsv").read_text().splitlines()[1] == "all\tcat\t1\t1\t1.0000"
    assert read_coverage(ds / "coverage.tsv") == cov
    assert coverage_statement(cov) == ("3 / 4 listed videos available (75.0 %); stage_2_test_seen 0 / 2 (0.0 %); "
                                       "stage_2_test_unseen 0 / 1 (0.0 %)")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="yt-dlp's download_ranges needs the ffmpeg program")
def test_ytdlp_sections_with_ffmpeg(tmp_path, server):
    server["serve"]("s", 1)
    opts, _ = _opts(server, sections="yt-dlp")
    counts, manifest, bad = _run(tmp_path, [DownloadRow("s", "dog", youtube_id="s", start=1.0, end=3.0)], opts)
    assert not bad and counts["sections"] == "yt-dlp"
    d = _duration(resolve_media(tmp_path / "ds" / "manifest.csv", manifest[0]))
    assert 1.5 < d < 3.0, d


@pytest.mark.slow
def test_cli_download(tmp_path, server):
    server["serve"]("a", 0)
    write_download_list(tmp_path / "l.csv", [DownloadRow("a", "dog", youtube_id="a", start=0, end=2)])
    r = subprocess.run([sys.executable, "-m", "avzsl", "--quiet", "download", "--list", str(tmp_path / "l.csv"),
                        "--manifest", str(tmp_path / "m.csv"), "--unavailable", str(tmp_path / "u.tsv"),
                        "--videos", str(tmp_path / "videos"), "--options",
                        json.dumps({"url_pattern": server["pattern"], "sections": "pyav"})],
                       capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [x.video_id for x in read_manifest(tmp_path / "m.csv")] == ["a"]


# ------------------------------------------------------------------------------------------ archives
@pytest.fixture(scope="module")
def rar_fixtures(tmp_path_factory):
    """The real .rar test archives of the rarfile 4.5 sdist (downloaded with pip into a cache folder)."""
    if not (shutil.which("bsdtar") and shutil.which("unar")):
        pytest.skip("bsdtar and unar are needed (Debian: libarchive-tools, unar)")
    cache = Path(tmp_path_factory.getbasetemp()).parent / "avzsl-rarfile-sdist"
    cache.mkdir(exist_ok=True)
    sdist = cache / "rarfile-4.5.tar.gz"
    if not sdist.exists():
        r = subprocess.run([sys.executable, "-m", "pip", "download", "rarfile==4.5", "--no-binary", ":all:",
                            "--no-deps", "--disable-pip-version-check", "-q", "-d", str(cache)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not sdist.exists():
            pytest.skip(f"rarfile 4.5 sdist not downloadable: {r.stderr.strip()[-200:]}")
    import tarfile

    out = tmp_path_factory.mktemp("rar")
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.name.startswith("rarfile-4.5/test/files/") and m.isfile()]
        t.extractall(out, members=members, filter="data")
    return out / "rarfile-4.5" / "test" / "files"


@pytest.mark.slow
def test_real_rar_archives(rar_fixtures, tmp_path):
    from extractors.sources.ucf_archive import extract_archive

    assert len(list(rar_fixtures.glob("*.rar"))) >= 40
    for name in ("rar3-subdirs.rar", "rar5-subdirs.rar"):  # RAR 4 and RAR 5, sub-folders: bsdtar
        dest = tmp_path / name
        assert extract_archive(rar_fixtures / name, dest) == "bsdtar"
        assert (dest / "sub" / "dir1" / "file1.txt").stat().st_size > 0
        assert (dest / "sub" / "with space" / "long fn.txt").is_file()
    dest = tmp_path / "only-dir2"  # a member filter extracts nothing else
    extract_archive(rar_fixtures / "rar5-subdirs.rar", dest, keep=lambda n: "/dir2/" in n)
    assert [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()] == ["sub/dir2/file2.txt"]
    dest = tmp_path / "solid"  # a RAR 4 solid archive: bsdtar refuses it, unar extracts it
    assert extract_archive(rar_fixtures / "rar3-solid.rar", dest) == "unar"
    files = sorted(p.name for p in dest.rglob("*") if p.is_file())
    assert files[:2] == ["stest1.txt", "stest2.txt"]
    assert not list(dest.glob(".unar.*"))


def _ucf_tree(root: Path) -> Path:
    """UCF101's layout: UCF-101/<Class>/v_<Class>_gXX_cYY.avi (mp4 content under the .avi name)."""
    clips = {"ApplyEyeMakeup": ["g01_c01", "g01_c02", "g02_c01"], "Archery": ["g01_c01"],
             "HandstandPushups": ["g03_c01"]}
    for i, (cls, names) in enumerate(clips.items()):
        d = root / "UCF-101" / cls
        d.mkdir(parents=True)
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls  # UCF's own spelling quirk
        for j, n in enumerate(names):
            write_av(d / f"v_{file_cls}_{n}.avi", seconds=1.0, fps=5, seed=10 * i + j)
    (root / "UCF-101" / "README.txt").write_text("not a clip")
    return root


@pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar is needed (Debian: libarchive-tools)")
@pytest.mark.parametrize("fmt", ["zip", "ustar"])
def test_ucf_shaped_archive(tmp_path, fmt):
    """No free tool writes .rar, so the UCF-shaped archive is a zip / tar with UCF101.rar's layout; the real .rar
    reading is covered by test_real_rar_archives."""
    from extractors.media.decode import decode
    from extractors.sources.manifest import read_class_names
    from extractors.sources.ucf_archive import ucf_from_archive

    src = _ucf_tree(tmp_path / "src")
    archive = tmp_path / f"UCF101.{fmt}"
    subprocess.run(["bsdtar", "-c", "-f", str(archive), "--format", fmt, "-C", str(src), "UCF-101"], check=True)
    ds = tmp_path / "ds"
    out = ucf_from_archive(archive, ds / "videos", ds / "manifest.csv", ds / "class_names.csv",
                           classes=["ApplyEyeMakeup", "HandstandPushups", "Basketball"])
    assert out["videos"] == 4 and out["classes"] == 2 and out["missing_classes"] == ["Basketball"]
    rows = read_manifest(ds / "manifest.csv")
    assert [(r.video_id, r.label, r.group) for r in rows] == [
        ("v_ApplyEyeMakeup_g01_c01", "ApplyEyeMakeup", "ApplyEyeMakeup_g01"),
        ("v_ApplyEyeMakeup_g01_c02", "ApplyEyeMakeup", "ApplyEyeMakeup_g01"),
        ("v_ApplyEyeMakeup_g02_c01", "ApplyEyeMakeup", "ApplyEyeMakeup_g02"),
        ("v_HandStandPushups_g03_c01", "HandstandPushups", "HandstandPushups_g03")]
    assert rows[0].path == "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"
    assert all(decode(resolve_media(ds / "manifest.csv", r), fps=5, sample_rate=16000).frames.shape[0] >= 4
               for r in rows)
    assert not (ds / "videos" / "Archery").exists() and not list(ds.glob(".*extracting"))
    assert read_class_names(ds / "class_names.csv") == {"ApplyEyeMakeup": "apply eye makeup",
                                                        "HandstandPushups": "handstand pushups"}


# ------------------------------------------------------------------------------------------ the workflow
@pytest.mark.slow
def test_download_rules_in_the_dag(tmp_path, server):
    """Two download shards and the merge through Snakemake: a 404 is recorded, the DAG does not fail."""
    import yaml

    for name in ("a", "b", "c", "d"):
        server["serve"](name, 0)
    wd = tmp_path / "wd"
    wd.mkdir()
    rows = [DownloadRow(n, lab, youtube_id=n, start=0.5, end=2.5) for n, lab in
            (("a", "dog"), ("b", "cat"), ("c", "owl"), ("d", "cow"), ("e", "cow"))]
    write_download_list(wd / "list.csv", rows)
    config = {"active_datasets": ["web"],
              "datasets": {"web": {"source": "download", "feature_sets": ["handcrafted"],
                                   "download": {"list": "list.csv", "url_pattern": server["pattern"], "shards": 2,
                                                "sections": "pyav", "backoff": 0.1},
                                   "splits": {"n_val_unseen": 1, "n_test_unseen": 1}}},
              "feature_sets": {"handcrafted": {"backbone": "handcrafted", "params": {}}},
              "models": ["avca"], "seeds": [1]}
    (wd / "config").mkdir()
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(Path(__file__).parent.parent / "Snakefile"), "--cores", "2",
           "resources/web/coverage.md", "--resources", "download_slots=1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(x.video_id for x in read_manifest(wd / "resources/web/manifest.csv")) == ["a", "b", "c", "d"]
    assert [o.video_id for o in read_unavailable(wd / "resources/web/unavailable.tsv")] == ["e"]
    assert "4 / 5 (80.0 %)" in (wd / "resources/web/coverage.md").read_text()
    assert len(list((wd / "resources/web/videos").glob("*.mp4"))) == 4


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bsdtar") is None, reason="bsdtar is needed (Debian: libarchive-tools)")
def test_ucf_archive_rule_in_the_dag(tmp_path):
    import yaml

    wd = tmp_path / "wd"
    wd.mkdir()
    src = _ucf_tree(tmp_path / "src")
    subprocess.run(["bsdtar", "-c", "-f", str(wd / "UCF101.zip"), "--format", "zip", "-C", str(src), "UCF-101"],
                   check=True)
    config = {"active_datasets": ["ucf"],
              "datasets": {"ucf": {"source": "ucf_archive", "feature_sets": ["handcrafted"],
                                   "ucf_archive": {"archive": "UCF101.zip"}}},
              "feature_sets": {"handcrafted": {"backbone": "handcrafted", "params": {}}},
              "models": ["avca"], "seeds": [1]}
    (wd / "config").mkdir()
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(Path(__file__).parent.parent / "Snakefile"),
                        "--cores", "1", "resources/ucf/manifest.csv"], cwd=wd, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_manifest(wd / "resources/ucf/manifest.csv")
    assert sorted({x.label for x in rows}) == ["ApplyEyeMakeup", "Archery", "HandstandPushups"] and len(rows) == 5
