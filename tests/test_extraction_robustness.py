"""Extraction at scale and on bad input: window times, batch independence, long videos in pieces, bad media,
missing modalities, a kill -9 in the middle, and the real bigbuckbunny.mp4."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import REPO
from media_fixtures import BAD_MEDIA, write_av, write_bad_media

from extractors.backbones import build_backbone
from extractors.backbones.base import (
    Backbone,
    InputFormat,
    ModalitySpec,
    audio_windows,
    frame_windows,
    register,
    stream_windows,
)
from extractors.extract import ExtractOptions, extract_shard
from extractors.feature_store import FeatureStore, step_map
from extractors.media.decode import decode, decode_stream
from extractors.sources.manifest import ManifestRow, write_manifest


@register
class TinyAV(Backbone):
    """A tiny backbone with different windows per modality (VGGish-like audio, C3D-like video)."""

    name = "tiny_av"
    default_params = {"audio_window": 0.96, "audio_hop": 0.48, "video_window": 0.64, "video_hop": 0.32}

    def __init__(self, audio_window, audio_hop, video_window, video_hop):
        super().__init__(audio_window=audio_window, audio_hop=audio_hop, video_window=video_window,
                         video_hop=video_hop)
        self.specs = {"audio": ModalitySpec(audio_window, audio_hop, 3), "video": ModalitySpec(video_window, video_hop, 5)}
        self.input_format = InputFormat(fps=25.0, short_side=16, sample_rate=16000)
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(3, 5)

    def window_data(self, clip, modality, starts):
        if modality == "audio":
            return torch.from_numpy(audio_windows(clip.audio, clip.sample_rate, starts, self.specs["audio"].window_seconds,
                                                  clip.sample_start))
        f = frame_windows(clip.frames, clip.fps, starts, self.specs["video"].window_seconds, 16, clip.frame_start)
        return torch.from_numpy(np.ascontiguousarray(f[:, :, :16, :16]))

    def embed(self, modality, x):
        if modality == "audio":
            return torch.stack([x.mean(1), x.std(1), x.abs().amax(1)], 1)
        return self.proj(x.float().mean((1, 2, 3)) / 255)


OPTS = dict(workers=0, progress=False)


def _manifest(folder, files):
    rows = [ManifestRow(p.stem, p.name, "c") for p in files]
    write_manifest(folder / "manifest.csv", rows)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    files = [write_av(d / f"v{i:02d}.mp4", seconds=1.5 + 0.37 * i, seed=i, sample_rate=[16000, 44100][i % 2])
             for i in range(6)]
    return d, files


def _features(path):
    s = FeatureStore(path)
    return {vid: s.video_steps(vid) for vid in s.ids}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for vid in a:
        for m in ("audio", "video"):
            np.testing.assert_array_equal(a[vid][m][0], b[vid][m][0], err_msg=f"{vid} {m}")
            np.testing.assert_array_equal(a[vid][m][1], b[vid][m][1], err_msg=f"{vid} {m} times")


@pytest.mark.parametrize("backbone,params", [("handcrafted", {"hop_seconds": 0.5}), ("tiny_av", {})])
def test_dims_window_counts_and_times_follow_the_declared_windows(clips, tmp_path, backbone, params):
    d, files = clips
    out = tmp_path / "f.h5"
    extract_shard(_manifest(d, files), 0, 1, backbone, params, out, ExtractOptions(**OPTS))
    store = FeatureStore(out)
    b = build_backbone(backbone, params)
    assert store.version == 2 and store.dims == {m: b.dim(m) for m in ("audio", "video")}
    for vid in store.ids:
        clip = decode(d / f"{vid}.mp4", fps=25, sample_rate=16000)
        steps = store.video_steps(vid)
        for m in ("audio", "video"):
            spec = b.specs[m]
            seq, times = steps[m]
            n = int(np.floor((clip.duration - spec.window_seconds) / spec.hop_seconds + 1e-6)) + 1
            assert len(seq) == len(times) == n and seq.shape[1] == spec.dim
            np.testing.assert_allclose(times[:, 0], np.arange(n) * spec.hop_seconds)
            np.testing.assert_allclose(times[:, 1] - times[:, 0], spec.window_seconds)
            assert times[-1, 1] <= clip.duration + 1e-9  # no window past the span both streams cover
        # audio steps mapped onto video steps by time
        idx = step_map(steps["audio"][1], steps["video"][1])
        a_c, v_c = steps["audio"][1].mean(1), steps["video"][1].mean(1)
        assert idx.tolist() == np.abs(a_c[None, :] - v_c[:, None]).argmin(1).tolist()


def test_features_do_not_depend_on_batching_order_or_run(clips, tmp_path):
    """Which videos share a batch, their order, the decode piece length and the number of decode workers change
    nothing (batches always have batch_windows rows, the last one padded); neither does a second run."""
    d, files = clips
    ref = tmp_path / "ref.h5"
    extract_shard(_manifest(d, files), 0, 1, "tiny_av", {}, ref, ExtractOptions(batch_windows=4, **OPTS))
    base = _features(ref)
    again = tmp_path / "again.h5"
    extract_shard(_manifest(d, files), 0, 1, "tiny_av", {}, again, ExtractOptions(batch_windows=4, **OPTS))
    _assert_same(base, _features(again))  # two runs, identical
    shuffled = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    sub = tmp_path / "shuffled"
    sub.mkdir()
    m = _manifest(d, shuffled)
    for i, (vpl, chunk, workers) in enumerate([(1, None, 0), (3, 0.7, 0), (8, 1.3, 2)]):
        out = sub / f"{i}.h5"
        extract_shard(m, 0, 1, "tiny_av", {}, out, ExtractOptions(videos_per_load=vpl, batch_windows=4,
                                                                  chunk_seconds=chunk, chunk_videos=2,
                                                                  workers=workers, progress=False))
        _assert_same(base, _features(out))
    # handcrafted computes each window on its own: even the batch size changes nothing
    for i, bw in enumerate([3, 256]):
        extract_shard(m if i else _manifest(d, files), 0, 1, "handcrafted", {}, sub / f"h{i}.h5",
                      ExtractOptions(videos_per_load=1 + 4 * i, batch_windows=bw, fixed_batch=False, **OPTS))
    _assert_same(_features(sub / "h0.h5"), _features(sub / "h1.h5"))


def test_a_long_video_in_pieces_equals_the_whole(tmp_path):
    path = write_av(tmp_path / "long.mp4", seconds=9.3, fps=12, sample_rate=22050, seed=5)
    for name, params in [("handcrafted", {"hop_seconds": 0.75}), ("tiny_av", {})]:
        b = build_backbone(name, params)
        f = b.input_format
        whole = b.preprocess(decode(path, fps=f.fps, sample_rate=f.sample_rate, short_side=f.short_side))
        pieces = list(decode_stream(path, fps=f.fps, sample_rate=f.sample_rate, short_side=f.short_side,
                                    chunk_seconds=2.0))
        assert len(pieces) >= 4 and max(len(p.frames) for p in pieces) <= 2.0 * f.fps + 2
        streamed = list(stream_windows(b, iter(pieces)))
        counts = streamed[-1].counts
        for m in ("audio", "video"):
            data = torch.cat([p.windows[m] for p in streamed if m in p.windows])[:counts[m]]
            times = np.concatenate([p.windows.times[m] for p in streamed if m in p.windows])[:counts[m]]
            assert torch.equal(data, whole[m]) and np.array_equal(times, whole.times[m])
        # and through extraction: chunked store == unchunked store
        write_manifest(tmp_path / "m.csv", [ManifestRow("long", "long.mp4", "c")])
        outs = []
        for chunk in (None, 2.0):
            outs.append(tmp_path / f"{name}_{chunk}.h5")
            extract_shard(tmp_path / "m.csv", 0, 1, name, params, outs[-1], ExtractOptions(chunk_seconds=chunk, **OPTS))
        _assert_same(_features(outs[0]), _features(outs[1]))


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    files = write_bad_media(d)
    good = [write_av(d / f"good{i}.mp4", seconds=2.0 + 0.3 * i, seed=100 + i) for i in range(3)]
    return d, files, good


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_media_is_recorded_and_the_good_videos_are_unaffected(bad_media, tmp_path, workers):
    d, files, good = bad_media
    everything = list(files.values()) + good
    write_manifest(tmp_path / "all.csv", [ManifestRow(p.stem, str(p), "c") for p in everything])
    write_manifest(tmp_path / "good.csv", [ManifestRow(p.stem, str(p), "c") for p in good])
    opts = ExtractOptions(workers=workers, progress=False, chunk_videos=4, videos_per_load=3)
    stats = extract_shard(tmp_path / "all.csv", 0, 1, "handcrafted", {}, tmp_path / "all.h5", opts)
    extract_shard(tmp_path / "good.csv", 0, 1, "handcrafted", {}, tmp_path / "good.h5", opts)
    store = FeatureStore(tmp_path / "all.h5")
    failed = dict(store.failures())
    assert stats["videos"] + stats["failed"] == len(everything)
    for name, (outcome, reason) in BAD_MEDIA.items():
        if outcome == "fail":
            assert re.search(reason, failed[name]), (name, failed.get(name))
        elif outcome == "ok":
            assert name in store.ids, (name, failed.get(name))
            assert store.lengths("audio")[store.rows([name])[0]] >= 1
        else:
            assert (name in store.ids) != (name in failed)
    assert not any("/" in r for r in failed.values()), "reasons name no paths"
    ref = _features(tmp_path / "good.h5")
    mine = _features(tmp_path / "all.h5")
    _assert_same(ref, {v: mine[v] for v in ref})
    short = store.video_steps("shorter_than_window")
    assert len(short["audio"][0]) == 1 and short["audio"][1][0, 1] == pytest.approx(0.4, abs=0.05)


def test_missing_modality_keep_marks_and_training_leaves_it_out(bad_media, tmp_path):
    d, files, good = bad_media
    rows = [ManifestRow(p.stem, str(p), "c") for p in [files["no_audio"], files["no_video"], *good]]
    write_manifest(tmp_path / "m.csv", rows)
    extract_shard(tmp_path / "m.csv", 0, 1, "handcrafted", {}, tmp_path / "f.h5",
                  ExtractOptions(missing_modality="keep", **OPTS))
    s = FeatureStore(tmp_path / "f.h5")
    assert set(s.ids) == {r.video_id for r in rows} and not s.failures()
    r = s.rows(["no_audio", "no_video", "good0"])
    assert s.present("audio", r).tolist() == [False, True, True]
    assert s.present("video", r).tolist() == [True, False, True]
    assert s.lengths("audio")[r].tolist()[0] == 0 and s.lengths("video")[r].tolist()[1] == 0
    assert not s.means("audio", r[:1]).any()
    from training.data.features import usable_rows

    keep, n_missing = usable_rows(s, r)
    assert keep.tolist() == [False, False, True] and n_missing == 2
    with pytest.raises(Exception, match="missing_modality must be one of"):
        ExtractOptions(missing_modality="zero")


@pytest.mark.slow
def test_kill_9_during_extraction_resumes_without_recomputing(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    files = [write_av(d / f"k{i:02d}.mp4", seconds=1.2 + 0.1 * (i % 5), seed=i) for i in range(10)]
    m = _manifest(d, files)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "avzsl", "--threads", "1", "extract", "--manifest", str(m), "--workers",
           "0", "--chunk-videos", "2", "--videos-per-load", "1", "--device", "cpu"]
    out = tmp_path / "f.h5"
    partial = tmp_path / "f.h5.partial"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while not list(partial.glob("chunk_*.h5")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "killed before it finished"
    assert not out.exists()
    chunks = sorted(partial.glob("chunk_*.h5"))
    committed = {v for c in chunks for v in FeatureStore(c).ids}  # every committed chunk is readable
    assert committed
    rerun = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    done = int(re.search(r"(\d+) already done", rerun.stderr).group(1))
    assert done >= len(committed) >= 2
    ref = tmp_path / "ref.h5"
    subprocess.run([*cmd, "--out", str(ref)], env=env, check=True, capture_output=True, timeout=600)
    _assert_same(_features(ref), _features(out))
    print(f"kill -9: {len(chunks)} chunk(s), {len(committed)} videos committed before the kill; rerun: {done} "
          "already done")


@pytest.mark.slow
@pytest.mark.parametrize("backbone,params", [("handcrafted", {}), ("handcrafted", {"hop_seconds": 0.25}),
                                             ("tiny_av", {})])
def test_real_clip_bigbuckbunny(bbb, tmp_path, backbone, params):
    write_manifest(tmp_path / "m.csv", [ManifestRow("bbb", str(bbb), "animation")])
    extract_shard(tmp_path / "m.csv", 0, 1, backbone, params, tmp_path / "f.h5",
                  ExtractOptions(chunk_seconds=2.0, **OPTS))
    s = FeatureStore(tmp_path / "f.h5")
    b = build_backbone(backbone, params)
    clip = decode(bbb, fps=25, sample_rate=48000)
    steps = s.video_steps("bbb")
    for m in ("audio", "video"):
        spec = b.specs[m]
        seq, times = steps[m]
        n = int(np.floor((clip.duration - spec.window_seconds) / spec.hop_seconds + 1e-6)) + 1
        assert seq.shape == (n, spec.dim) and np.isfinite(seq).all()
        np.testing.assert_allclose(times[:, 0], np.arange(n) * spec.hop_seconds)
        np.testing.assert_allclose(times[:, 1] - times[:, 0], spec.window_seconds)
        print(f"bigbuckbunny {backbone} {params} {m}: {seq.shape[0]} windows x {seq.shape[1]} dims, "
              f"duration {clip.duration:.3f}s, last window {times[-1].tolist()}")
    # 5.1 audio: both channel treatments decode
    mean = decode(bbb, fps=5, sample_rate=16000, short_side=32, channels="mean")
    down = decode(bbb, fps=5, sample_rate=16000, short_side=32)
    assert len(mean.audio) == len(down.audio) and not np.array_equal(mean.audio, down.audio)
