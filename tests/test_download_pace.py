"""A video server that trickles is stopped by the minimum rate, and one that is merely slow by the deadline: yt-dlp's
socket timeout only catches a stall. Both are transient (recorded, retried on the next run)."""

from __future__ import annotations

import http.server
import time

import pytest
from helpers import base_url, local_http_server
from media_fixtures import write_av

from extractors.sources.download import (
    DownloadOptions,
    DownloadRow,
    _Pace,
    download,
    read_unavailable,
    write_download_list,
)
from extractors.sources.manifest import read_manifest

pytestmark = pytest.mark.timeout(60)


def _trickling(data: bytes, chunk: int, pause: float):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - the http.server interface
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(0, len(data), chunk):
                    self.wfile.write(data[i:i + chunk])
                    self.wfile.flush()
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                pass

    return H


@pytest.fixture
def trickle(tmp_path):
    data = write_av(tmp_path / "src.mp4", seconds=2.0, fps=10, seed=1).read_bytes()
    with local_http_server(_trickling(data, chunk=256, pause=0.05)) as srv:  # about 5 kB/s
        yield base_url(srv) + "/{youtube_id}.mp4"


def _download(tmp_path, pattern, **kw):
    lst = tmp_path / "list.csv"
    write_download_list(lst, [DownloadRow("v1", "c", youtube_id="v1", group="g")])
    opts = DownloadOptions(url_pattern=pattern, attempts=1, sections="pyav", timeout=5, sleep=lambda s: None, **kw)
    out = tmp_path / "ds"
    t0 = time.monotonic()
    download(lst, out / "manifest.csv", out / "unavailable.tsv", options=opts)
    took = time.monotonic() - t0
    return took, read_manifest(out / "manifest.csv"), {o.video_id: o for o in read_unavailable(out / "unavailable.tsv")}


@pytest.mark.slow
def test_a_trickling_video_server_is_stopped_by_the_minimum_rate(tmp_path, trickle):
    took, rows, failed = _download(tmp_path, trickle, min_rate=50_000, rate_window=1.0, deadline=None)
    assert not rows and "under the minimum rate of 50000" in failed["v1"].reason
    assert failed["v1"].kind == "transient"  # tried again next time
    assert took < 6, took
    print(f"trickle (~5 kB/s, min rate 50 kB/s over 1 s) stopped after {took:.2f} s")


@pytest.mark.slow
def test_a_slow_video_download_is_stopped_by_the_deadline(tmp_path, trickle):
    took, rows, failed = _download(tmp_path, trickle, min_rate=0, deadline=1.5)
    assert not rows and "took more than 1.5 s (the deadline)" in failed["v1"].reason
    assert failed["v1"].kind == "transient"
    assert took < 6, took
    print(f"slow download (deadline 1.5 s) stopped after {took:.2f} s")


def test_pace_by_hand():
    now = [0.0]
    pace = _Pace(min_rate=100, window=10, deadline=None, clock=lambda: now[0])
    for t, b in [(0, 0), (5, 5000), (10, 6000)]:  # 600 bytes/s over the first 10 s
        now[0] = t
        pace({"status": "downloading", "downloaded_bytes": b})
    now[0] = 21
    with pytest.raises(Exception, match="sends 50 bytes/s"):  # 6000 -> 6550 over 11 s
        pace({"status": "downloading", "downloaded_bytes": 6550})
    assert pace.failure is not None and not pace.failure.permanent
