"""Decode a media file into RGB frames at a target frame rate and mono audio at a target sample rate.

PyAV is the default decoder (it bundles FFmpeg); decord is an option. Anything that goes wrong with a file
raises :class:`MediaError` with a reason a person can act on; callers record it and carry on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

DECODERS = ("pyav", "decord")


class MediaError(Exception):
    """A file that cannot be used, with the reason."""


@dataclass
class Clip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, sampled at ``fps``
    fps: float
    audio: np.ndarray  # (S,) float32 mono in [-1, 1] at ``sample_rate``
    sample_rate: int
    duration: float  # seconds covered by both streams


def decode(path: str | Path, *, fps: float, sample_rate: int, short_side: int | None = None,
           decoder: str = "pyav", max_seconds: float | None = None) -> Clip:
    """Decode ``path``: frames resampled to ``fps`` (nearest earlier frame) and resized so that the short side
    is ``short_side`` (aspect kept), audio mixed to mono and resampled to ``sample_rate``."""
    path = Path(path)
    if not path.exists():
        raise MediaError("file not found")
    if path.stat().st_size == 0:
        raise MediaError("empty file")
    if decoder == "pyav":
        clip = _decode_pyav(path, fps, sample_rate, short_side, max_seconds)
    elif decoder == "decord":
        clip = _decode_decord(path, fps, sample_rate, short_side, max_seconds)
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {DECODERS}")
    if len(clip.frames) == 0:
        raise MediaError("no decodable video frames")
    if len(clip.audio) == 0:
        raise MediaError("no decodable audio samples")
    if not np.isfinite(clip.audio).all():
        raise MediaError("audio contains NaN or inf samples")
    return clip


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    # even sizes keep every pixel format happy
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _decode_pyav(path: Path, fps: float, sample_rate: int, short_side: int | None,
                 max_seconds: float | None) -> Clip:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(f"cannot open container: {_short(e)}") from None
    with container:
        if not container.streams.video:
            raise MediaError("no video stream")
        if not container.streams.audio:
            raise MediaError("no audio stream")
        vs, as_ = container.streams.video[0], container.streams.audio[0]
        vs.thread_type = "AUTO"
        width, height = _target_size(vs.codec_context.width, vs.codec_context.height, short_side)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        frames: list[np.ndarray] = []
        audio: list[np.ndarray] = []
        step = 1.0 / fps
        period = _frame_period(vs)
        next_t = 0.0
        last_video_t = 0.0
        try:
            for packet in container.demux(vs, as_):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        t = _frame_time(frame, vs)
                        if max_seconds is not None and t >= max_seconds:
                            continue
                        last_video_t = max(last_video_t, t)
                        if t + 0.5 * period < next_t:
                            continue
                        img = frame.to_ndarray(format="rgb24", width=width, height=height)
                        # a frame stands in for every target instant up to the next decoded frame
                        while next_t <= t + 0.5 * period:
                            frames.append(img)
                            next_t += step
                    else:
                        for rf in resampler.resample(frame):
                            audio.append(rf.to_ndarray().reshape(-1))
            for rf in resampler.resample(None):
                audio.append(rf.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as e:
            if not frames or not audio:
                raise MediaError(f"decoding failed: {_short(e)}") from None
            # keep what decoded cleanly before the damage; the caller records the shortened duration
    wav = np.concatenate(audio).astype(np.float32) if audio else np.zeros(0, np.float32)
    if max_seconds is not None:
        wav = wav[: int(max_seconds * sample_rate)]
    return _finish(frames, fps, wav, sample_rate, last_video_t + period)


def _frame_time(frame, stream) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - float((stream.start_time or 0) * stream.time_base)
    return float(frame.time or 0.0)


def _frame_period(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    return 1.0 / float(rate)


def _decode_decord(path: Path, fps: float, sample_rate: int, short_side: int | None,
                   max_seconds: float | None) -> Clip:
    try:
        import decord
    except ImportError as e:  # optional dependency
        raise RuntimeError("decoder 'decord' requested but decord is not installed (pip install decord)") from e
    try:
        probe = decord.VideoReader(str(path))
        h, w = probe[0].shape[:2]
        native_fps = probe.get_avg_fps()
        n = len(probe)
        del probe
        width, height = _target_size(w, h, short_side)
        vr = decord.VideoReader(str(path), width=width, height=height)
    except (decord.DECORDError, RuntimeError, IndexError) as e:
        raise MediaError(f"cannot decode video: {_short(e)}") from None
    duration = n / native_fps
    if max_seconds is not None:
        duration = min(duration, max_seconds)
    count = max(1, int(math.floor(duration * fps + 1e-6)))
    idx = np.minimum(np.floor(np.arange(count) / fps * native_fps + 1e-6).astype(int), n - 1)
    try:
        frames = vr.get_batch(list(idx)).asnumpy()
        ar = decord.AudioReader(str(path), sample_rate=sample_rate, mono=True)
        wav = ar[:].asnumpy().reshape(-1).astype(np.float32)
    except (decord.DECORDError, RuntimeError) as e:
        msg = _short(e)
        raise MediaError("no audio stream" if "audio" in msg.lower() else f"decoding failed: {msg}") from None
    if max_seconds is not None:
        wav = wav[: int(max_seconds * sample_rate)]
    return _finish(list(frames), fps, wav, sample_rate, duration)


def _finish(frames: list[np.ndarray], fps: float, wav: np.ndarray, sample_rate: int, video_seconds: float) -> Clip:
    stack = np.stack(frames) if frames else np.zeros((0, 2, 2, 3), np.uint8)
    duration = min(video_seconds, len(wav) / sample_rate) if len(wav) else 0.0
    return Clip(frames=stack, fps=fps, audio=wav, sample_rate=sample_rate, duration=max(duration, 0.0))


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]
