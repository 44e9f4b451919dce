"""Sharded extraction: real files in, a feature store out; bad media recorded; interrupted shards resume."""

import numpy as np
import pytest

import extractors.extract as ex
from extractors.extract import ExtractionError, ExtractOptions, extract_shard
from extractors.feature_store import FeatureStore, merge_stores
from extractors.sources.demo import DemoSpec, generate
from extractors.sources.manifest import ManifestRow, read_manifest, write_manifest


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("ex")
    m = generate(d, DemoSpec(n_visuals=2, n_sounds=2, clips_per_class=3, min_seconds=1.2, max_seconds=2.5),
                 workers=1, progress=False)
    return m


OPTS = ExtractOptions(workers=0, progress=False, chunk_videos=3, videos_per_load=2)


def test_shards_cover_the_manifest_and_record_failures(small_manifest, tmp_path):
    rows = read_manifest(small_manifest)
    for s in range(2):
        extract_shard(small_manifest, s, 2, "handcrafted", {}, tmp_path / f"{s}.h5", OPTS)
    merge_stores([tmp_path / "0.h5", tmp_path / "1.h5"], tmp_path / "all.h5")
    store = FeatureStore(tmp_path / "all.h5")
    failed = dict(store.failures())
    assert set(store.ids) | set(failed) == {r.video_id for r in rows}
    assert failed["broken_no_audio"] == "no audio stream"
    assert "broken_truncated" in failed
    assert store.has_sequences and store.attrs["extractor"] == "handcrafted"
    assert store.step_seconds == {"audio": 1.0, "video": 1.0}
    lengths = store.lengths("audio")
    assert (lengths >= 1).all() and (lengths == store.lengths("video")).all()
    assert not (tmp_path / "0.h5.partial").exists()


def test_partial_results_of_another_configuration_are_discarded(small_manifest, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    calls = []
    real_embed = ex._embed_pooled

    def embed_then_die(backbone, modality, windows, device, opts):
        calls.append(len(windows))
        if len(calls) > 4:  # after two loads (two videos each, audio + video) the job is killed
            raise KeyboardInterrupt
        return real_embed(backbone, modality, windows, device, opts)

    monkeypatch.setattr(ex, "_embed_pooled", embed_then_die)
    with pytest.raises(KeyboardInterrupt):
        extract_shard(small_manifest, 0, 1, "handcrafted", {}, out, OPTS)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and list(partial.glob("chunk_*.h5"))
    assert ex._completed_ids(partial, expected_hash="another-configuration") == set()
    assert not partial.exists()


def test_resume_keeps_committed_chunks(small_manifest, tmp_path, monkeypatch):
    out = tmp_path / "s.h5"
    real_embed = ex._embed_pooled
    seen: list[int] = []

    def die_late(backbone, modality, windows, device, opts):
        seen.append(len(windows))
        if len(seen) > 4:
            raise KeyboardInterrupt
        return real_embed(backbone, modality, windows, device, opts)

    monkeypatch.setattr(ex, "_embed_pooled", die_late)
    with pytest.raises(KeyboardInterrupt):
        extract_shard(small_manifest, 0, 1, "handcrafted", {}, out, OPTS)
    partial = out.with_name(out.name + ".partial")
    committed = {v for c in partial.glob("chunk_*.h5") for v in FeatureStore(c).ids}
    assert committed, "a chunk was committed before the interruption"

    redone: list[str] = []
    def count(backbone, modality, windows, device, opts):
        if modality == "audio":
            redone.extend(["x"] * len(windows))
        return real_embed(backbone, modality, windows, device, opts)

    monkeypatch.setattr(ex, "_embed_pooled", count)
    stats = extract_shard(small_manifest, 0, 1, "handcrafted", {}, out, OPTS)
    total = len(read_manifest(small_manifest))
    assert stats["videos"] + stats["failed"] == total
    assert len(redone) == total - 2 - len(committed)  # committed videos and the two broken files are not redone
    # the resumed store equals one made in a single go
    ref = tmp_path / "ref.h5"
    monkeypatch.setattr(ex, "_embed_pooled", real_embed)
    extract_shard(small_manifest, 0, 1, "handcrafted", {}, ref, OPTS)
    a, b = FeatureStore(out), FeatureStore(ref)
    order = b.rows(a.ids)
    np.testing.assert_allclose(a.means("video"), b.means("video")[order], rtol=1e-5, atol=1e-6)


def test_a_shard_where_everything_fails_is_an_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    write_manifest(tmp_path / "m.csv", [ManifestRow("bad", "bad.mp4", "c")])
    with pytest.raises(ExtractionError, match="every one of the 1 videos"):
        extract_shard(tmp_path / "m.csv", 0, 1, "handcrafted", {}, tmp_path / "o.h5", OPTS)
    assert not (tmp_path / "o.h5").exists()
