"""Verified downloads against a hostile server on 127.0.0.1: after each bad answer no file exists under its final
name, the command's message is one line, and a rerun once the server is fixed succeeds without deleting anything by
hand (docs/acquisition.md, "Verified downloads")."""

from __future__ import annotations

import email.utils
import json
import shutil
import time
from pathlib import Path

import pytest
from helpers import cli_error
from hostile_server import CKPT, ETAG, FILES, serve_hostile

from avzsl.fetching import FetchError, Limits, http_get, retry_after_seconds
from extractors.sources.official import official_files
from extractors.weights import check_format


@pytest.fixture
def server():
    with serve_hostile() as served:
        yield served


_cli = cli_error


def _fetch_cli(url: str, out: Path, *extra: str) -> str | None:
    return _cli("fetch", "--url", url, "--out", str(out), "--backoff", "0.01", *extra)


def _one_line(msg: str | None, *words: str) -> str:
    assert msg is not None and "\n" not in msg and msg.startswith("avzsl "), msg
    for w in words:
        assert w in msg, msg
    return msg


def _nothing_final(out: Path) -> None:
    assert not out.exists() and not Path(str(out) + ".json").exists()


def _fixed_rerun(srv, url: str, out: Path, body: bytes, *extra: str) -> None:
    srv.mode = "good"
    assert _fetch_cli(url, out, *extra) is None
    assert out.read_bytes() == body and json.loads(Path(str(out) + ".json").read_text())["size"] == len(body)
    assert not list(out.parent.glob("*.partial*"))


@pytest.mark.slow
def test_fetch_html_page_for_a_checkpoint_is_refused(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    srv.mode = "html"
    _one_line(_fetch_cli(f"{base}/w.pth", out, "--retries", "1"), "/w.pth", "HTML page", "after 2 attempts")
    _nothing_final(out)
    assert len(srv.log) == 2  # transient: retried
    _fixed_rerun(srv, f"{base}/w.pth", out, CKPT)


@pytest.mark.slow
def test_fetch_html_body_without_html_type_fails_the_format_check(server, tmp_path):
    srv, base = server
    srv.files["/x.pth"] = b"<!DOCTYPE html><html>an error page served as octet-stream</html>"
    out = tmp_path / "x.pth"
    _one_line(_fetch_cli(f"{base}/x.pth", out), "/x.pth: not a pth file (it is an HTML page)", "discarded")
    _nothing_final(out)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_fetch_body_shorter_than_content_length_is_resumed(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    srv.mode = "short"
    _one_line(_fetch_cli(f"{base}/w.pth", out), f"closed after {len(CKPT) // 2} of {len(CKPT)} bytes",
              "the next run resumes it")
    _nothing_final(out)
    assert (tmp_path / "w.pth.partial").stat().st_size == len(CKPT) // 2  # a valid prefix, with its validator
    _fixed_rerun(srv, f"{base}/w.pth", out, CKPT)
    assert srv.log[-1][2:] == (f"bytes={len(CKPT) // 2}-", ETAG)


@pytest.mark.slow
def test_fetch_resume_answered_416_accepts_no_garbage(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    partial, meta = tmp_path / "w.pth.partial", tmp_path / "w.pth.partial.json"
    # a 416 whose size is not the partial's: the partial is discarded and the download restarts at once
    partial.write_bytes(b"x" * 28)
    meta.write_text(json.dumps({"url": f"{base}/w.pth", "validator": ETAG}))
    srv.mode = "416"
    assert _fetch_cli(f"{base}/w.pth", out) is None and out.read_bytes() == CKPT
    assert [e[2] for e in srv.log] == ["bytes=28-", None]
    # a 416 that says 28 bytes are the whole file: "complete", but 28 bytes of garbage are not a checkpoint
    out.unlink()
    Path(str(out) + ".json").unlink()
    partial.write_bytes(b"x" * 28)
    meta.write_text(json.dumps({"url": f"{base}/w.pth", "validator": ETAG}))
    srv.claimed_size = 28
    _one_line(_fetch_cli(f"{base}/w.pth", out), "/w.pth: not a checkpoint (torch.load(weights_only=True)",
              "discarded")
    _nothing_final(out)
    assert not partial.exists()
    _fixed_rerun(srv, f"{base}/w.pth", out, CKPT)


@pytest.mark.slow
def test_fetch_206_starting_at_zero_restarts(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    (tmp_path / "w.pth.partial").write_bytes(CKPT[:3000])
    (tmp_path / "w.pth.partial.json").write_text(json.dumps({"url": f"{base}/w.pth", "validator": ETAG}))
    srv.mode = "range0"
    assert _fetch_cli(f"{base}/w.pth", out) is None
    assert out.read_bytes() == CKPT  # not 3000 bytes longer
    assert [e[2] for e in srv.log] == ["bytes=3000-", None]


@pytest.mark.slow
def test_fetch_stale_partial_of_another_url_is_discarded(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    (tmp_path / "w.pth.partial").write_bytes(b"another file's first bytes")
    (tmp_path / "w.pth.partial.json").write_text(json.dumps({"url": f"{base}/old.pth", "validator": ETAG}))
    assert _fetch_cli(f"{base}/w.pth", out) is None and out.read_bytes() == CKPT
    assert srv.log[0][2] is None  # no range asked
    # a partial without its sidecar (an older version's) is not resumed either
    out2 = tmp_path / "v" / "w.pth"
    out2.parent.mkdir()
    (out2.parent / "w.pth.partial").write_bytes(b"junk")
    assert _fetch_cli(f"{base}/w.pth", out2) is None and out2.read_bytes() == CKPT
    assert srv.log[-1][2] is None


@pytest.mark.slow
def test_fetch_trickling_server_is_stopped_by_the_minimum_rate(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    srv.mode = "trickle"  # 1 byte / 0.2 s
    t0 = time.monotonic()
    msg = _fetch_cli(f"{base}/w.pth", out, "--min-rate", "100", "--rate-window", "2")
    took = time.monotonic() - t0
    _one_line(msg, "/w.pth", "below the minimum of 100 (--min-rate)")
    print(f"trickle stopped by --min-rate 100 --rate-window 2 after {took:.2f} s")
    assert 2 <= took < 5
    _nothing_final(out)
    _fixed_rerun(srv, f"{base}/w.pth", out, CKPT)
    assert srv.log[-1][2] is not None  # the trickled bytes were kept and resumed


@pytest.mark.slow
def test_fetch_trickle_stopped_by_the_deadline_and_a_stall_by_the_timeout(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    srv.mode = "trickle"
    t0 = time.monotonic()
    msg = _fetch_cli(f"{base}/w.pth", out, "--min-rate", "0", "--deadline", "1.5", "--retries", "2")
    took = time.monotonic() - t0
    _one_line(msg, "not finished within the deadline of 1.5 s")
    print(f"trickle stopped by --deadline 1.5 after {took:.2f} s")
    assert 1.5 <= took < 3
    srv.mode = "stall"
    t0 = time.monotonic()
    msg = _fetch_cli(f"{base}/a.tar.gz", tmp_path / "a.tar.gz", "--timeout", "1")
    took = time.monotonic() - t0
    _one_line(msg, "/a.tar.gz", "timed out")
    print(f"stalled server stopped by --timeout 1 after {took:.2f} s")
    assert took < 3
    _nothing_final(out)
    _fixed_rerun(srv, f"{base}/w.pth", out, CKPT)


@pytest.mark.slow
def test_fetch_retry_after_is_honoured_and_capped(server, tmp_path):
    srv, base = server
    out = tmp_path / "w.pth"
    srv.mode = "busy:2"
    assert _fetch_cli(f"{base}/w.pth", out, "--retries", "1") is None and out.read_bytes() == CKPT
    waited = srv.log[1][0] - srv.log[0][0]
    print(f"Retry-After: 2 -> the retry came {waited:.2f} s later")
    assert 1.9 <= waited < 4
    # more than the cap: no retry now, one line saying so
    srv.mode, srv.log = "busy:3600", []
    out2 = tmp_path / "b" / "w.pth"
    _one_line(_fetch_cli(f"{base}/w.pth", out2, "--retries", "3"), "HTTP 503", "retry after 3600 s",
              "run again later")
    assert len(srv.log) == 1
    _nothing_final(out2)
    _fixed_rerun(srv, f"{base}/w.pth", out2, CKPT)


def test_retry_after_as_seconds_or_date():
    assert retry_after_seconds("2") == 2 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds(date, now=1_000_000) == pytest.approx(30)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["UCF101.zip", "a.tar.gz", "UCF101.rar"])
def test_fetch_archive_cut_halfway_is_refused_then_fetched_again(server, tmp_path, name):
    if name.endswith(".rar") and not shutil.which("bsdtar"):
        pytest.skip("bsdtar is needed to list a .rar")
    srv, base = server
    out = tmp_path / name
    srv.mode = "cut"
    _one_line(_fetch_cli(f"{base}/{name}", out), f"/{name}: not an archive (it does not list", "discarded")
    _nothing_final(out)
    assert not list(tmp_path.iterdir())
    _fixed_rerun(srv, f"{base}/{name}", out, FILES[f"/{name}"])


@pytest.mark.slow
def test_http_get_retries_a_short_body_and_refuses_html(server):
    srv, base = server
    srv.files["/ids.txt"] = b"a\nb\nc\n" * 100
    srv.mode = "short"
    calls = []
    with pytest.raises(FetchError, match=r"closed after 300 of 600 bytes \(after 3 attempts\)"):
        http_get(f"{base}/ids.txt", retries=2, sleep=calls.append)
    assert len(calls) == 2 and len(srv.log) == 3
    srv.mode = "html"
    with pytest.raises(FetchError, match="HTML page"):
        http_get(f"{base}/ids.txt", retries=0)
    srv.mode = "trickle"
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="below the minimum"):
        http_get(f"{base}/ids.txt", retries=0, limits=Limits(min_rate=100, rate_window=1))
    assert time.monotonic() - t0 < 3
    srv.mode = "good"
    assert http_get(f"{base}/ids.txt") == srv.files["/ids.txt"]


@pytest.mark.slow
def test_official_split_shorter_than_announced_is_retried_then_one_line(server, shared_splits, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr("avzsl.fetching.time.sleep", lambda s: None)
    srv, base = server
    files = official_files(["UCF"])
    srv.files.update({f"/src/{f.path}": (shared_splits / f.path).read_bytes() for f in files})
    srv.mode = "short"
    cache, out = tmp_path / "cache", tmp_path / "split"
    msg = _one_line(_cli("fetch-official-splits", "--dataset", "UCF", "--source", f"{base}/src", "--cache", str(cache),
                         "--out", str(out), "--retries", "2"), "closed after", "(after 3 attempts)")
    assert msg.startswith("avzsl fetch-official-splits: error: cannot download " + base)
    assert len(srv.log) == 3 and not out.exists()
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]
    srv.mode = "good"
    assert _cli("fetch-official-splits", "--dataset", "UCF", "--source", f"{base}/src", "--cache", str(cache),
                "--out", str(out)) is None
    assert all((cache / f.path).is_file() for f in files)


def test_format_checks_per_kind(tmp_path):
    def check(name, data):
        p = tmp_path / "f.partial"
        p.write_bytes(data)
        return check_format(p, name, "u")

    assert check("w.pth", CKPT) == "a checkpoint" and check("x.unknown", b"anything") is None
    assert check("a.json", b'{"a": 1}') == "a .json file" and check("a.csv", b"a,b\n1,2\n") == "a .csv file"
    assert check("v.bin", (793712314).to_bytes(4, "little") + b"rest") == "a fastText or word2vec .bin"
    assert check("g.bin", b"3000000 300\n") == "a fastText or word2vec .bin"
    for name, data, words in [("a.json", b'{"a": ', "does not parse as JSON"), ("a.txt", b"\xff\xfe", "not UTF-8"),
                              ("v.bin", b"\x00" * 8, "fastText magic number"),
                              ("p.npz", b"PK\x03\x04 cut", "not a zip archive of arrays"),
                              ("w.pt", b"\x80\x02garbage", "not a checkpoint")]:
        with pytest.raises(ValueError, match=words):
            check(name, data)


@pytest.mark.slow
def test_fetch_checks_a_checkpoint_against_the_keys_its_backbone_loads(server, tmp_path):
    """A loadable checkpoint of another network is refused at fetch with the keys that do not fit, not at
    extraction; the right layout passes (bench/official_layouts.py fabricates it)."""
    from bench.official_layouts import selavi_state, write_selavi

    srv, base = server
    out = tmp_path / "selavi.pth"
    _one_line(_fetch_cli(f"{base}/w.pth", out, "--backbone", "selavi", "--param", "weights"),
              "/w.pth: not the weights file of backbone 'selavi'", "missing", "discarded")
    _nothing_final(out)
    srv.files["/w.pth"] = write_selavi(tmp_path / "src.pth", selavi_state()).read_bytes()
    _fixed_rerun(srv, f"{base}/w.pth", out, srv.files["/w.pth"], "--backbone", "selavi", "--param", "weights")
