"""A programmable HTTP server on 127.0.0.1 for the download tests: ``mode`` says how its next answers misbehave
(an HTML page, a body shorter than announced, a 416, a 206 from byte 0, a trickle, a stall, a 503 with Retry-After);
``"good"`` once it is fixed. Shared by tests/test_fetch_verified.py (the commands) and tests/test_fetch_rules.py
(the same cases through Snakemake)."""

from __future__ import annotations

import contextlib
import http.server
import io
import tarfile
import threading
import time
import zipfile


def _checkpoint_bytes() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(65_536, dtype=torch.float32)}, buf)
    return buf.getvalue()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(4):
            z.writestr(f"UCF-101/C{i}/v_C{i}_g01_c01.avi", bytes(range(256)) * 64 * (i + 1))
    return buf.getvalue()


def _tar_bytes(mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for i in range(4):
            data = bytes((j * 7 + i) % 251 for j in range(40_000))
            info = tarfile.TarInfo(f"d/f{i}.bin")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


CKPT = _checkpoint_bytes()
ETAG = '"v1"'
FILES = {"/w.pth": CKPT, "/UCF101.zip": _zip_bytes(), "/a.tar.gz": _tar_bytes(), "/UCF101.rar": _tar_bytes("w")}


class HostileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    mode: str  # how the next answers misbehave; "good" once the server is fixed
    modes: dict  # path -> mode, for paths that misbehave otherwise than ``mode`` says
    log: list  # (monotonic time, path, Range header, If-Range header)
    files: dict


class HostileHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        srv = self.server
        mode = srv.modes.get(self.path, srv.mode)
        srv.log.append((time.monotonic(), self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        try:
            self._answer(mode, body)
        except OSError:  # the client gave up (a trickle stopped)
            pass

    def _answer(self, mode, body):
        srv = self.server
        rng = self.headers.get("Range")
        if mode == "html":
            page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
            self._send(200, page, {"Content-Type": "text/html; charset=utf-8"})
        elif mode == "short":  # announces the whole body, sends half, closes
            self._send(200, body[: len(body) // 2], {"Content-Length": str(len(body))})
        elif mode == "cut":  # a consistent answer, but of half the file
            self._send(200, body[: len(body) // 2])
        elif mode == "416" and rng:
            self._send(416, b"", {"Content-Range": f"bytes */{srv.claimed_size or len(body)}"})
        elif mode == "range0" and rng:  # a 206 that starts at byte 0 whatever was asked
            self._send(206, body, {"Content-Range": f"bytes 0-{len(body) - 1}/{len(body)}"})
        elif mode == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", ETAG)
            self.end_headers()
            for b in body:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(0.2)
        elif mode == "stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            time.sleep(30)
        elif mode.startswith("busy"):  # busy:<Retry-After>: 503 once, then good
            if self.path in srv.modes:
                srv.modes[self.path] = "good"
            else:
                srv.mode = "good"
            self._send(503, b"busy", {"Retry-After": mode.split(":", 1)[1]})
        else:
            start = 0
            if rng and self.headers.get("If-Range") == ETAG:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
            headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {}
            self._send(206 if start else 200, body[start:], headers)

    def _send(self, code, body, headers=None):
        headers = {"Content-Length": str(len(body)), "ETag": ETAG, "Content-Type": "application/octet-stream",
                   **(headers or {})}
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_hostile(files: dict[str, bytes] | None = None):
    """(server, base URL) serving ``files`` (default :data:`FILES`) until the block ends."""
    srv = HostileServer(("127.0.0.1", 0), HostileHandler)
    srv.mode, srv.modes, srv.log, srv.claimed_size = "good", {}, [], None
    srv.files = dict(FILES if files is None else files)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
