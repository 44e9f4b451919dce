"""Digests locked on first use (avzsl/lockfile.py; docs/acquisition.md, "The lock file"), against a real HTTP server
on 127.0.0.1: the first fetch locks, a second clean folder with the same lock file refuses a different body with one
line, `avzsl lock --update` re-locks, a pinned digest wins, parallel fetches lose no entry."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import base_url, cli_error, local_http_server

from avzsl import lockfile
from extractors.leakage import LeakageError, load_vocabulary
from extractors.sources.official import OfficialSplitError, git_blob_id, load_activitynet_annotations
from extractors.weights import fetch

REPO = Path(__file__).resolve().parent.parent
OLD, NEW = b"first model bytes\x00" * 64, b"second model, another body\x01" * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    with local_http_server(_Handler, files={"/m.dat": OLD}) as srv:
        yield srv, base_url(srv)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_cli = cli_error


def _fetch_cli(url: str, out: Path, *extra: str) -> str | None:
    return _cli("fetch", "--url", url, "--out", str(out), *extra)


def _files(path: Path) -> dict:
    return json.loads(path.read_text())["files"]


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A clean folder as working directory, with the default lock file ./avzsl.lock.json."""
    def clean(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        return folder

    monkeypatch.delenv(lockfile.ENV, raising=False)
    return clean


@pytest.mark.slow
def test_first_fetch_locks_then_another_machine_refuses_a_different_body_until_relocked(server, machine):
    srv, base = server
    url = f"{base}/m.dat"
    first = machine("first")
    assert _fetch_cli(url, "resources/weights/m.dat", "--where", "feature_sets.x.params") is None
    entry = _files(first / "avzsl.lock.json")[url]
    assert entry["sha256"] == _sha(OLD) and entry["size"] == len(OLD) and entry["what"] == "feature_sets.x.params"
    assert len(entry["locked_on"]) == 10  # YYYY-MM-DD
    assert _fetch_cli(url, "again/m.dat") is None  # the same body again: verified, the entry unchanged
    assert _files(first / "avzsl.lock.json")[url] == entry

    second = machine("second")  # another clean folder, with the committed lock file
    shutil.copy(first / "avzsl.lock.json", second / "avzsl.lock.json")
    srv.files["/m.dat"] = NEW
    out = second / "resources" / "weights" / "m.dat"
    msg = _fetch_cli(url, "resources/weights/m.dat")
    assert msg is not None and "\n" not in msg, msg
    assert msg.startswith("avzsl fetch: error: resources/weights/m.dat ") and url in msg, msg
    assert _sha(NEW) in msg and _sha(OLD) in msg and f"avzsl lock --update {url}" in msg, msg
    assert not out.exists() and not list(out.parent.iterdir())  # no final file, record, nor partial
    assert _files(second / "avzsl.lock.json")[url]["sha256"] == _sha(OLD)

    assert _cli("lock", "--update", url) is None
    assert url not in _files(second / "avzsl.lock.json")
    assert _fetch_cli(url, "resources/weights/m.dat") is None
    assert out.read_bytes() == NEW and _files(second / "avzsl.lock.json")[url]["sha256"] == _sha(NEW)


@pytest.mark.slow
def test_lock_update_all_unknown_url_and_the_lock_option(server, machine, capsys):
    srv, base = server
    srv.files["/n.dat"] = NEW
    folder = machine("m")
    elsewhere = folder / "locks" / "project.lock.json"
    for name in ("m.dat", "n.dat"):
        assert _fetch_cli(f"{base}/{name}", name, "--lock", str(elsewhere)) is None
    assert not (folder / "avzsl.lock.json").exists() and len(_files(elsewhere)) == 2
    capsys.readouterr()
    assert _cli("lock", "--lock", str(elsewhere)) is None
    assert set(json.loads(capsys.readouterr().out)["files"]) == {f"{base}/m.dat", f"{base}/n.dat"}
    msg = _cli("lock", "--lock", str(elsewhere), "--update", f"{base}/typo.dat")
    assert msg.startswith("avzsl lock: error: ") and "no entry for" in msg and "\n" not in msg, msg
    assert _cli("lock", "--lock", str(elsewhere), "--update-all") is None
    assert _files(elsewhere) == {}


@pytest.mark.slow
def test_pinned_sha256_wins_over_a_stale_lock_entry(server, machine):
    srv, base = server
    url = f"{base}/m.dat"
    folder = machine("m")
    assert _fetch_cli(url, "a/m.dat") is None
    srv.files["/m.dat"] = NEW
    assert _fetch_cli(url, "b/m.dat", f"--sha256={_sha(NEW)}") is None  # the configuration vouches for it
    assert (folder / "b" / "m.dat").read_bytes() == NEW
    assert _files(folder / "avzsl.lock.json")[url]["sha256"] == _sha(NEW)  # the lock now agrees
    msg = _fetch_cli(url, "c/m.dat", f"--sha256={_sha(OLD)}")  # a pinned digest the body lacks: refused as before
    assert "the configuration says" in msg and not (folder / "c" / "m.dat").exists()


def test_local_files_are_not_locked(machine):
    folder = machine("m")
    (folder / "local.dat").write_bytes(OLD)
    assert _fetch_cli(str(folder / "local.dat"), "w/local.dat") is None
    assert _fetch_cli((folder / "local.dat").as_uri(), "v/local.dat") is None
    assert not (folder / "avzsl.lock.json").exists()


@pytest.mark.slow
def test_parallel_fetches_all_land_in_the_lock(server, tmp_path):
    srv, base = server
    names = [f"/f{i}.dat" for i in range(8)]
    for i, n in enumerate(names):
        srv.files[n] = bytes([i]) * (1000 + i)
    errors = []

    def one(n):
        try:
            fetch(f"{base}{n}", tmp_path / "w" / n.lstrip("/"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # and separate processes (Snakemake's parallel fetch jobs), each locking many urls at once
    code = ("import sys; from avzsl import lockfile\n"
            "for i in range(25): lockfile.check(f'http://h/{sys.argv[1]}/{i}', '%064x' % i, i, 'test')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=REPO) for p in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    files = _files(lockfile.lock_path())
    assert {f"{base}{n}" for n in names} <= set(files) and len(files) == len(names) + 100
    assert all(files[f"{base}{n}"]["size"] == 1000 + i for i, n in enumerate(names))


@pytest.mark.slow
def test_vocabularies_and_annotations_are_locked(server):
    srv, base = server
    srv.files["/voc.txt"] = b"abseiling\nair drumming\n"
    assert load_vocabulary("kinetics400", f"{base}/voc.txt")[:2] == ["abseiling", "air drumming"]
    srv.files["/voc.txt"] = b"abseiling\nair guitar\n"
    with pytest.raises(LeakageError, match="avzsl lock --update"):
        load_vocabulary("kinetics400", f"{base}/voc.txt")

    ann_old = json.dumps({"database": {"abc": {"annotations": []}}}).encode()
    ann_new = json.dumps({"database": {"abd": {"annotations": []}}}).encode()
    srv.files["/ann.json"] = ann_old
    assert set(load_activitynet_annotations(f"{base}/ann.json", retries=0)) == {"abc"}
    srv.files["/ann.json"] = ann_new
    with pytest.raises(OfficialSplitError, match=_sha(ann_new)):
        load_activitynet_annotations(f"{base}/ann.json", retries=0)
    # the pinned blob id wins, and the lock is made to agree
    assert set(load_activitynet_annotations(f"{base}/ann.json", retries=0, git_blob=git_blob_id(ann_new))) == {"abd"}
    assert lockfile.read()[f"{base}/ann.json"]["sha256"] == _sha(ann_new)


def test_tests_never_write_the_repository_lock_file():
    assert lockfile.lock_path().resolve().parent != REPO  # conftest.own_lock_file
