"""Weight files by url: downloads from a server on 127.0.0.1 (digest enforced, failures named, partial downloads
resumed with a range request), the feature-set parameters they replace, and the fetch jobs in the DAG."""

from __future__ import annotations

import hashlib
import http.server
import json
from pathlib import Path

import pytest
import yaml
from helpers import base_url, local_http_server
from test_workflow import TINY, planned_jobs, snakemake, workdir_with

from extractors.weights import (
    WeightsError,
    check_local,
    fetch,
    read_record,
    resolve_weight_params,
    sidecar,
    weight_targets,
)


def _checkpoint_bytes() -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(262_144, dtype=torch.float32)}, buf)
    return buf.getvalue()


PAYLOAD = _checkpoint_bytes()  # a real checkpoint of 1 MiB: the format check loads it
ETAG = '"v1"'


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /w.pth with an ETag (honouring ``Range: bytes=N-`` with a matching ``If-Range``), 404
    elsewhere."""

    def do_GET(self):  # noqa: N802 - the http.server interface
        if self.path != "/w.pth":
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range") and self.headers.get("If-Range") == ETAG:
            self.server.ranges.append(self.headers["Range"])
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", ETAG)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with local_http_server(_Handler, ranges=[]) as srv:
        yield srv, base_url(srv)


SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.mark.slow
def test_download_checks_the_digest_and_records_it(server, tmp_path):
    _, base = server
    out = tmp_path / "w" / "w.pth"
    record = fetch(f"{base}/w.pth", out, SHA.upper())
    assert out.read_bytes() == PAYLOAD
    assert record == read_record(sidecar(out)) == {"source": f"{base}/w.pth", "file": "w.pth", "size": len(PAYLOAD),
                                                    "sha256": SHA}
    assert not list(out.parent.glob("*.partial"))


@pytest.mark.slow
def test_a_wrong_digest_discards_the_download_and_names_the_key(server, tmp_path):
    _, base = server
    out = tmp_path / "w.pth"
    with pytest.raises(WeightsError, match=r"^feature_sets\.main\.params\.sha256: .* has sha256 " + SHA):
        fetch(f"{base}/w.pth", out, "0" * 64, where="feature_sets.main.params")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_unavailable_file_is_an_error_that_says_why(server, tmp_path):
    _, base = server
    with pytest.raises(WeightsError, match=r"cannot download .*/missing\.pth: HTTP 404"):
        fetch(f"{base}/missing.pth", tmp_path / "m.pth")
    with pytest.raises(WeightsError, match=r"cannot download .*the next run tries again"):
        fetch("http://127.0.0.1:9/w.pth", tmp_path / "m.pth", timeout=5)  # nothing listens on port 9
    with pytest.raises(WeightsError, match=r"^x\.url: local weight file not found"):
        fetch(str(tmp_path / "nothing.pth"), tmp_path / "m.pth", where="x")


@pytest.mark.slow
def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    (tmp_path / "w.pth.partial").write_bytes(PAYLOAD[:300_000])  # what an interrupted run left, and its sidecar
    (tmp_path / "w.pth.partial.json").write_text(json.dumps({"url": f"{base}/w.pth", "validator": ETAG}))
    fetch(f"{base}/w.pth", out, SHA)
    assert srv.ranges == ["bytes=300000-"] and out.read_bytes() == PAYLOAD


def test_a_local_path_or_file_url_is_copied_and_recorded(tmp_path):
    src = tmp_path / "src.pth"
    src.write_bytes(PAYLOAD)
    for i, url in enumerate([str(src), src.as_uri()]):
        rec = fetch(url, tmp_path / f"o{i}" / "w.pth", SHA)
        assert rec["sha256"] == SHA and (tmp_path / f"o{i}" / "w.pth").read_bytes() == PAYLOAD


CLS = {"audio": {"backbone": "vggish", "params": {"url": "http://h/vggish.pth", "sha256": "ab" * 32,
                                                  "pca_url": "http://h/pca.npz", "embedding": "raw"}},
       "video": {"backbone": "c3d", "params": {"url": "https://h/c3d.pickle"}}}


def test_every_file_parameter_given_by_url_is_fetched_and_passed_as_that_parameter():
    targets = weight_targets("cls", CLS)
    assert {p: (t["part"], t["param"], t["url"], t["sha256"]) for p, t in targets.items()} == {
        "resources/weights/cls/audio/vggish.pth": ("audio", "weights", "http://h/vggish.pth", "ab" * 32),
        "resources/weights/cls/audio/pca.npz": ("audio", "pca", "http://h/pca.npz", ""),
        "resources/weights/cls/video/c3d.pickle": ("video", "weights", "https://h/c3d.pickle", "")}
    assert resolve_weight_params("cls", CLS) == {
        "audio": {"backbone": "vggish", "params": {"embedding": "raw", "weights": "resources/weights/cls/audio/vggish.pth",
                                                   "pca": "resources/weights/cls/audio/pca.npz"}},
        "video": {"backbone": "c3d", "params": {"weights": "resources/weights/cls/video/c3d.pickle"}}}
    shared = {"audio": {"backbone": "selavi", "params": {"url": "http://h/selavi.pth"}}}
    shared["video"] = shared["audio"]
    assert list(weight_targets("main", shared)) == ["resources/weights/main/av/selavi.pth"]
    with pytest.raises(WeightsError, match=r"^x\.params\.pca_url: files given by url are fetched by the workflow"):
        check_local({"pca_url": "http://h/pca.npz"}, "x")


@pytest.mark.slow
def test_the_dag_fetches_each_url_once_before_extraction(tmp_path):
    cfg = json.loads(json.dumps(TINY))
    cfg["feature_sets"] = {"cls": CLS}
    cfg["datasets"]["demo"]["feature_sets"] = ["cls"]
    wd = workdir_with(tmp_path, cfg)
    proc = snakemake(wd, "-n")
    jobs = planned_jobs(proc.stdout)
    assert jobs["fetch_weights"] == 3 and jobs["extract_shard"] == 2
    assert "resources/weights/cls/audio/pca.npz" in proc.stdout
    assert yaml.safe_load((wd / "config" / "config.yaml").read_text())["feature_sets"]["cls"] == CLS
    assert not Path(wd / "resources").exists()
    bad = json.loads(json.dumps(cfg))
    bad["feature_sets"]["cls"]["audio"]["params"]["pca_sha256"] = "xyz"
    proc = snakemake(workdir_with(tmp_path / "bad", bad), "-n", check=False)
    assert proc.returncode != 0 and "feature_sets.cls.audio.params.pca_sha256 must be 64 hexadecimal digits" in (
        proc.stdout + proc.stderr)
