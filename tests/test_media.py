"""Decoding real files, windows, the weight-free backbone."""

import av
import numpy as np
import pytest
import torch
from media_fixtures import write_av

from extractors.backbones import build_backbone
from extractors.backbones.base import frame_windows, window_starts
from extractors.media.decode import MediaError, decode
from extractors.sources.demo import FORMATS, DemoSpec, write_clip


def _write_pcm_clip(path, left, right, sr=44100, fps=10, n_frames=20, size=(64, 48)):
    """H.264 video + lossless stereo PCM audio, so down-mixing can be checked exactly."""
    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=sr, layout="stereo")
        for i in range(n_frames):
            for p in vs.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 10 * i, np.uint8), format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        data = (np.stack([left, right]) * 32767).astype(np.int16).T.reshape(1, -1).copy()
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        frame.sample_rate = sr
        for p in [*a.encode(frame), *a.encode()]:
            out.mux(p)


@pytest.fixture(scope="module")
def pcm_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("pcm")
    t = np.arange(88200) / 44100
    x = 0.5 * np.sin(2 * np.pi * 1000 * t)
    for name, (left, right) in {"same": (x, x), "opposite": (x, -x), "left": (x, 0 * x)}.items():
        _write_pcm_clip(d / f"{name}.mkv", left, right)
    return d


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_resampling_and_ffmpeg_downmix(pcm_clips, decoder):
    same = decode(pcm_clips / "same.mkv", fps=5, sample_rate=16000, decoder=decoder)
    assert len(same.audio) == 32000 and same.sample_rate == 16000
    spectrum = np.abs(np.fft.rfft(same.audio))
    assert np.fft.rfftfreq(len(same.audio), 1 / 16000)[spectrum.argmax()] == pytest.approx(1000, abs=2)
    # FFmpeg's standard stereo -> mono downmix: each channel at 1/sqrt(2)
    assert np.abs(same.audio).max() == pytest.approx(0.5 * np.sqrt(2), rel=0.02)
    left = decode(pcm_clips / "left.mkv", fps=5, sample_rate=16000, decoder=decoder)
    assert np.abs(left.audio).max() == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    opposite = decode(pcm_clips / "opposite.mkv", fps=5, sample_rate=16000, decoder=decoder)
    assert np.abs(opposite.audio).max() < 1e-3


@pytest.mark.parametrize("decoder", ["pyav", "decord"])
def test_frames_resampled_to_the_target_rate(pcm_clips, decoder):
    clip = decode(pcm_clips / "same.mkv", fps=5, sample_rate=16000, decoder=decoder, short_side=24)
    assert clip.frames.shape == (10, 24, 32, 3)  # 2 s at 5 fps; 64x48 -> short side 24
    # frame i at 5 fps shows source frame 2i (brightness 10 * 2i)
    assert np.abs(clip.frames[:, 12, 16, 0].astype(int) - 20 * np.arange(10)).max() <= 3
    assert clip.duration == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("fmt", range(len(FORMATS)))
def test_demo_formats_decode_with_both_decoders(tmp_path, fmt, monkeypatch):
    import extractors.sources.demo as demo

    monkeypatch.setattr(demo, "FORMATS", [FORMATS[fmt]])
    path = tmp_path / "c.mp4"
    write_clip(path, np.random.default_rng(0), 1, 2, DemoSpec(min_seconds=2, max_seconds=2.2))
    a = decode(path, fps=8, sample_rate=16000, short_side=32)
    b = decode(path, fps=8, sample_rate=16000, short_side=32, decoder="decord")
    assert min(a.frames.shape[1:3]) == 32 and a.frames.shape[1:] == b.frames.shape[1:]
    assert abs(len(a.frames) - len(b.frames)) <= 1
    assert abs(len(a.audio) - len(b.audio)) <= 1024
    assert 2.0 <= a.duration <= 2.3


def test_broken_media_errors_name_the_reason(tmp_path):
    good = tmp_path / "good.mp4"
    write_clip(good, np.random.default_rng(0), 0, 0, DemoSpec(min_seconds=1, max_seconds=1.2))
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:300])
    (tmp_path / "empty.mp4").write_bytes(b"")
    silent = tmp_path / "silent.mp4"
    write_clip(silent, np.random.default_rng(0), 0, 0, DemoSpec(min_seconds=1, max_seconds=1.2), with_audio=False)
    for name, reason in [("cut.mp4", "cannot open|decoding failed|no "), ("empty.mp4", "empty file"),
                         ("silent.mp4", "no audio stream"), ("missing.mp4", "file not found")]:
        with pytest.raises(MediaError, match=reason):
            decode(tmp_path / name, fps=8, sample_rate=16000)


def test_windows():
    assert window_starts(3.4, 1.0).tolist() == [0, 1, 2]
    assert window_starts(0.4, 1.0).tolist() == [0]  # a short clip still gives one (padded) window
    assert window_starts(3.0, 1.0, hop=0.5).tolist() == [0, 0.5, 1.0, 1.5, 2.0]
    frames = np.arange(30)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # 30 frames at 10 fps
    w = frame_windows(frames, 10.0, np.array([0.0, 1.0]), 1.0, 4)
    assert w[:, :, 0, 0, 0].tolist() == [[1, 3, 6, 8], [11, 13, 16, 18]]


def test_handcrafted_backbone_dims_batching_and_determinism(tmp_path):
    path = tmp_path / "c.mp4"
    write_clip(path, np.random.default_rng(1), 3, 4, DemoSpec(min_seconds=3, max_seconds=3.5))
    bb = build_backbone("handcrafted").eval()
    clip = decode(path, fps=bb.video_fps, sample_rate=bb.sample_rate, short_side=bb.video_short_side)
    win = bb.preprocess(clip)
    assert win["audio"].shape == (3, 16000) and win["video"].shape == (3, 8, 64, 64, 3)
    with torch.no_grad():
        a, v = bb.embed("audio", win["audio"]), bb.embed("video", win["video"])
        assert a.shape == (3, bb.audio_dim) and v.shape == (3, bb.video_dim)
        assert torch.isfinite(a).all() and torch.isfinite(v).all()
        # a window's features do not depend on what else is in the batch
        torch.testing.assert_close(bb.embed("video", win["video"][1:2]), v[1:2], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(bb.embed("audio", win["audio"][2:]), a[2:], rtol=1e-4, atol=1e-4)


def test_handcrafted_features_separate_what_is_seen_and_heard(tmp_path):
    """Colour/motion features differ between visual patterns, band statistics between sounds."""
    bb = build_backbone("handcrafted").eval()
    feats = {}
    for vi, si in [(0, 0), (1, 0), (0, 1)]:
        p = tmp_path / f"{vi}{si}.mp4"
        write_clip(p, np.random.default_rng(vi * 10 + si), vi, si, DemoSpec(min_seconds=2, max_seconds=2.2,
                                                                              difficulty=0.0))
        w = bb.preprocess(decode(p, fps=bb.video_fps, sample_rate=bb.sample_rate, short_side=bb.video_short_side))
        with torch.no_grad():
            feats[(vi, si)] = (bb.embed("audio", w["audio"]).mean(0), bb.embed("video", w["video"]).mean(0))
    # red ball vs blue square: the hue histograms (video dims 6..18) differ; same sound: audio bands close
    assert (feats[(0, 0)][1][6:18] - feats[(1, 0)][1][6:18]).abs().sum() > 0.5
    # low hum vs high whistle: band means (audio dims 0..40) differ
    assert (feats[(0, 0)][0][:40] - feats[(0, 1)][0][:40]).abs().mean() > 1.0


def test_unknown_backbone_parameter():
    with pytest.raises(ValueError, match="unknown parameter"):
        build_backbone("handcrafted", {"n_melz": 40})
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("nope")


def test_fps_filter_rounds_like_ffmpeg_and_header_is_read(tmp_path):
    """``frames="fps_filter"``: a frame's output slot is round(t * fps) with halves up (FFmpeg's AV_ROUND_NEAR_INF),
    so at 24 -> 25 fps the frame at 0.5 s starts slot 13 and slot 12 repeats frame 11; the nearest-frame rule
    (``resampled``) gives slot 12 to the frame at 0.5 s."""
    from fractions import Fraction

    from extractors.media.decode import _fps_slot

    assert _fps_slot(Fraction(1, 2), 25) == 13 and _fps_slot(Fraction(11, 24), 25) == 11
    assert _fps_slot(Fraction(1, 10), 25) == 3  # 2.5 -> 3: halves go up
    path = write_av(tmp_path / "v24.mp4", seconds=1.0, fps=24, size=(32, 24))
    exact = decode(path, fps=25, sample_rate=16000, frames="fps_filter")
    near = decode(path, fps=25, sample_rate=16000)
    assert len(exact.frames) == len(near.frames) == 25  # round((23/24 + 1/24) * 25) = 25 slots
    np.testing.assert_array_equal(exact.frames[12], exact.frames[11])
    assert not np.array_equal(near.frames[12], near.frames[11])
    native = decode(path, fps=25, sample_rate=16000, frames="native")
    assert len(native.frames) == 24 and native.header.frames == 24 and native.header.average_rate == 24
    assert native.fps == 24.0 and np.all(np.diff(native.frame_pts) > 0)
