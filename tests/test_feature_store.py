import h5py
import numpy as np
import pytest

from extractors.feature_store import (
    FeatureStore,
    FeatureStoreError,
    StoreSpec,
    VideoFeatures,
    merge_stores,
    write_store,
)


def _spec(seq=True, **kw):
    return StoreSpec(audio_dim=3, video_dim=2, has_sequences=seq, extractor="test", extractor_config={"a": 1},
                     config_hash="abc", **kw)


def _video(i, t_a, t_v, label="c"):
    rng = np.random.default_rng(i)
    return VideoFeatures(f"v{i}", label, audio_seq=rng.normal(size=(t_a, 3)).astype(np.float32),
                         video_seq=rng.normal(size=(t_v, 2)).astype(np.float32))


def test_roundtrip_ragged_sequences_and_means(tmp_path):
    vids = [_video(0, 3, 2), _video(1, 1, 4, "d"), _video(2, 5, 5)]
    write_store(tmp_path / "f.h5", _spec(), vids, failures=[("bad", "no audio stream")])
    s = FeatureStore(tmp_path / "f.h5")
    assert s.ids == ["v0", "v1", "v2"] and s.labels == ["c", "d", "c"]
    assert s.dims == {"audio": 3, "video": 2}
    np.testing.assert_allclose(s.means("audio")[1], vids[1].audio_seq.mean(0), rtol=1e-6)
    assert s.lengths("audio").tolist() == [3, 1, 5]
    flat, off = s.sequences("video", np.array([2, 0]))
    assert off.tolist() == [0, 5, 7]
    np.testing.assert_array_equal(flat[:5], vids[2].video_seq)
    np.testing.assert_array_equal(flat[5:], vids[0].video_seq)
    assert s.failures() == [("bad", "no audio stream")]
    assert s.rows(["v2", "missing"]).tolist() == [2, -1]
    with h5py.File(tmp_path / "f.h5") as f:
        assert f.attrs["format"] == "avzsl-features" and f.attrs["config_hash"] == "abc"
        assert "code_version" in f.attrs and f.attrs["extractor"] == "test"


def test_means_only_store_refuses_sequences(tmp_path):
    write_store(tmp_path / "m.h5", _spec(seq=False),
                [VideoFeatures("a", "c", audio_mean=np.ones(3), video_mean=np.zeros(2))])
    s = FeatureStore(tmp_path / "m.h5")
    assert not s.has_sequences
    with pytest.raises(FeatureStoreError, match="no per-step sequences"):
        s.sequences("audio", np.array([0]))


def test_merge_and_duplicates(tmp_path):
    write_store(tmp_path / "a.h5", _spec(), [_video(0, 2, 2)], [("x", "broken")])
    write_store(tmp_path / "b.h5", _spec(), [_video(1, 3, 1)])
    merge_stores([tmp_path / "a.h5", tmp_path / "b.h5"], tmp_path / "m.h5")
    m = FeatureStore(tmp_path / "m.h5")
    assert m.ids == ["v0", "v1"] and m.failures() == [("x", "broken")]
    write_store(tmp_path / "c.h5", _spec(), [_video(0, 1, 1)])
    with pytest.raises(FeatureStoreError, match="duplicate"):
        merge_stores([tmp_path / "a.h5", tmp_path / "c.h5"], tmp_path / "bad.h5")
    other = StoreSpec(audio_dim=3, video_dim=2, has_sequences=True, extractor="test", config_hash="zzz")
    write_store(tmp_path / "d.h5", other, [_video(5, 1, 1)])
    with pytest.raises(FeatureStoreError, match="different extractor configuration"):
        merge_stores([tmp_path / "a.h5", tmp_path / "d.h5"], tmp_path / "bad.h5")


def test_failed_write_leaves_nothing(tmp_path):
    bad = VideoFeatures("x", "c", audio_seq=np.full((2, 3), np.nan, np.float32), video_seq=np.ones((2, 2)))
    with pytest.raises(FeatureStoreError, match="NaN"):
        write_store(tmp_path / "f.h5", _spec(), [_video(0, 1, 1), bad])
    assert list(tmp_path.iterdir()) == []


def test_wrong_dimension_is_refused(tmp_path):
    with pytest.raises(FeatureStoreError, match="dimension 4"):
        write_store(tmp_path / "f.h5", _spec(), [VideoFeatures("x", "c", audio_seq=np.ones((2, 4)),
                                                                video_seq=np.ones((2, 2)))])
