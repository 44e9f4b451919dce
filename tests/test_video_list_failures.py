"""Video failures a user can trust, through ``avzsl download`` against a server on 127.0.0.1: an HTML page answered
with 200 is transient (counted across runs, permanent only after ``permanent_after_runs`` runs, fetched once the
server is fixed); an id too long for a file name fails that video alone (the shard's manifest and unavailable.tsv
are written); expected failures of the command are one line."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from media_fixtures import write_av

from extractors.sources.download import DownloadRow, read_unavailable, write_download_list
from extractors.sources.manifest import read_manifest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).parent.parent
HTML = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in.</body></html>\n"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_av(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=2.0, fps=10, seed=3).read_bytes()


@pytest.fixture
def server():
    """``files[name] = (content type, body)``; ``hits`` lists the names asked for."""
    state = {"files": {}, "hits": []}

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - the http.server interface
            name = self.path.lstrip("/").split("?")[0]
            state["hits"].append(name)
            if name not in state["files"]:
                self.send_error(404)
                return
            ctype, body = state["files"][name]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = _Server(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["pattern"] = f"http://127.0.0.1:{srv.server_address[1]}/{{youtube_id}}.mp4"
    yield state
    srv.shutdown()
    srv.server_close()


def _download(tmp_path, server, rows, **options):
    lst = tmp_path / "list.csv"
    if rows is not None:
        write_download_list(lst, rows)
    ds = tmp_path / "ds"
    opts = {"url_pattern": server["pattern"], "sections": "pyav", "attempts": 2, "backoff": 0.05, "timeout": 5,
            **options}
    r = subprocess.run([sys.executable, "-m", "avzsl", "--quiet", "download", "--list", str(lst),
                        "--manifest", str(ds / "shard_0.csv"), "--unavailable", str(ds / "shard_0.unavailable.tsv"),
                        "--videos", str(ds / "videos"), "--options", json.dumps(opts)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    return r, ds


def _state(ds):
    manifest = [x.video_id for x in read_manifest(ds / "shard_0.csv")]
    bad = {o.video_id: o for o in read_unavailable(ds / "shard_0.unavailable.tsv")}
    return manifest, bad


@pytest.mark.slow
@pytest.mark.parametrize("ctype", ["text/html", "video/mp4"])
def test_html_page_is_transient_then_permanent_after_n_runs(tmp_path, server, clip, ctype):
    """text/html: yt-dlp's generic extractor finds no media ("Unsupported URL"); video/mp4 with an HTML body: the
    downloaded file is sniffed. Both: transient with a count, permanent at the third run, not asked for after."""
    server["files"]["page.mp4"] = (ctype, HTML)
    server["files"]["ok.mp4"] = ("video/mp4", clip)
    rows = [DownloadRow("p", "dog", youtube_id="page"), DownloadRow("o", "cat", youtube_id="ok")]
    for run in (1, 2):
        r, ds = _download(tmp_path, server, rows)
        assert r.returncode == 0, r.stderr
        manifest, bad = _state(ds)
        assert manifest == ["o"] and bad["p"].kind == "transient" and bad["p"].attempts == run
        assert bad["p"].reason.startswith("not media") and f"(run {run} of 3;" in bad["p"].reason
        assert not (ds / "videos" / "p.unavailable.json").exists()
        assert json.loads((ds / "videos" / "p.failures.json").read_text())["runs"] == run
    assert server["hits"].count("page.mp4") >= 2 and not (ds / "videos" / "p.mp4").exists()
    r, ds = _download(tmp_path, server, rows)
    manifest, bad = _state(ds)
    assert bad["p"].kind == "permanent" and bad["p"].reason.endswith("(in 3 runs)") and bad["p"].attempts == 3
    assert (ds / "videos" / "p.unavailable.json").exists() and not (ds / "videos" / "p.failures.json").exists()
    hits = server["hits"].count("page.mp4")
    _download(tmp_path, server, rows)  # permanent: not asked for again
    assert server["hits"].count("page.mp4") == hits and _state(ds)[1]["p"].kind == "permanent"
    # the server fixed: retry_unavailable fetches it, and every record of it is gone
    server["files"]["page.mp4"] = ("video/mp4", clip)
    r, ds = _download(tmp_path, server, rows, retry_unavailable=True)
    assert r.returncode == 0, r.stderr
    manifest, bad = _state(ds)
    assert sorted(manifest) == ["o", "p"] and not bad
    assert not list((ds / "videos").glob("p.*.json"))


@pytest.mark.slow
def test_html_page_fixed_before_n_runs_is_fetched(tmp_path, server, clip):
    server["files"]["page.mp4"] = ("video/mp4", HTML)
    rows = [DownloadRow("p", "dog", youtube_id="page", start=0.5, end=1.5)]
    r, ds = _download(tmp_path, server, rows, permanent_after_runs=5)
    manifest, bad = _state(ds)
    assert not manifest and bad["p"].kind == "transient" and "(run 1 of 5;" in bad["p"].reason
    # not media: not retried within the run (yt-dlp's generic extractor asks twice per try; attempts=2 would be 4)
    assert server["hits"].count("page.mp4") <= 2
    server["files"]["page.mp4"] = ("video/mp4", clip)
    r, ds = _download(tmp_path, server, rows, permanent_after_runs=5)
    assert r.returncode == 0, r.stderr
    manifest, bad = _state(ds)
    assert manifest == ["p"] and not bad and (ds / "videos" / "p.mp4").is_file()
    assert not (ds / "videos" / "p.failures.json").exists()


@pytest.mark.slow
def test_300_character_id_fails_alone(tmp_path, server, clip):
    server["files"]["ok.mp4"] = ("video/mp4", clip)
    long_id = "x" * 300
    rows = [DownloadRow(long_id, "dog", youtube_id="ok"), DownloadRow("o", "cat", youtube_id="ok")]
    r, ds = _download(tmp_path, server, rows)
    assert r.returncode == 0, r.stderr
    manifest, bad = _state(ds)
    assert manifest == ["o"] and bad[long_id].kind == "permanent" and bad[long_id].attempts == 0
    assert "too long for a file name (304 bytes with .mp4, at most 200)" in bad[long_id].reason
    assert "line 2" in bad[long_id].reason and "list.csv" in bad[long_id].reason
    assert sorted(p.name for p in (ds / "videos").iterdir() if not p.name.startswith(".")) == ["o.mp4"]
    # the list fixed (the id shortened): the rerun fetches it, nothing deleted by hand
    rows[0] = DownloadRow("x" * 150, "dog", youtube_id="ok")
    r, ds = _download(tmp_path, server, rows)
    manifest, bad = _state(ds)
    assert sorted(manifest) == sorted(["o", "x" * 150]) and not bad


@pytest.mark.slow
def test_bad_option_is_one_line(tmp_path, server):
    r, _ = _download(tmp_path, server, [DownloadRow("o", "cat", youtube_id="ok")], permanent_after_run=2)
    lines = [x for x in r.stderr.splitlines() if x.strip() and not LOG_LINE.match(x)]
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("avzsl download: error: unknown download option(s) ['permanent_after_run']")


@pytest.mark.slow
def test_a_link_in_videos_is_never_listed(tmp_path, server, clip):
    server["files"]["ok.mp4"] = ("video/mp4", clip)
    videos = tmp_path / "ds" / "videos"
    videos.mkdir(parents=True)
    (videos / "o.mp4").symlink_to("/etc/passwd")
    r, ds = _download(tmp_path, server, [DownloadRow("o", "cat", youtube_id="ok")])
    assert r.returncode == 0, r.stderr
    assert _state(ds)[0] == ["o"] and not (videos / "o.mp4").is_symlink() and (videos / "o.mp4").is_file()
    assert server["hits"] == ["ok.mp4"] * len(server["hits"]) and server["hits"]
