"""Decode a media file into RGB frames at a target frame rate and mono audio at a target sample rate.

PyAV is the default decoder (it bundles FFmpeg); decord is an option. Anything that goes wrong with a file
raises :class:`MediaError` with a reason a person can act on; callers record it and carry on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

DECODERS = ("pyav", "decord")
FRAME_MODES = ("resampled", "fps_filter", "native")
INTERPOLATIONS = (None, "BILINEAR", "BICUBIC")
SAMPLE_FORMATS = ("float", "s16")
RESAMPLERS = ("ffmpeg", "resampy")


class MediaError(Exception):
    """A file that cannot be used, with the reason."""


@dataclass(frozen=True)
class VideoHeader:
    """What the container's header says about the video stream, before decoding: ``frames`` (0 when the header
    has no count), ``average_rate`` (frames per second), ``duration`` in ``time_base`` units (None when absent)."""

    frames: int
    average_rate: Fraction | None
    duration: int | None
    time_base: Fraction | None


@dataclass
class Clip:
    """Decoded media, or one piece of it (see :func:`decode_stream`)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, sampled at ``fps``
    fps: float
    audio: np.ndarray  # (S,) float32 mono in [-1, 1] at ``sample_rate`` (float64 from resampler="resampy")
    sample_rate: int
    duration: float  # seconds covered by both streams (of a piece: decoded so far)
    frame_start: int = 0  # frames[0] is frame ``frame_start`` of the video (at ``fps``)
    sample_start: int = 0  # audio[0] is sample ``sample_start`` of the video
    missing: tuple[str, ...] = ()  # modalities the file has no stream for (kept under missing_modality: keep)
    final: bool = True  # the last piece: ``duration`` is the duration of the whole video
    # frames: "native": each decoded frame's presentation timestamp (stream time base), else None
    frame_pts: np.ndarray | None = None
    header: VideoHeader | None = None  # of the video stream; None without one

    @property
    def n_frames(self) -> int:
        """Frames decoded up to the end of this piece."""
        return self.frame_start + len(self.frames)

    @property
    def n_samples(self) -> int:
        """Samples decoded up to the end of this piece."""
        return self.sample_start + len(self.audio)

    def has(self, modality: str) -> bool:
        return modality not in self.missing


def decode(path: str | Path, *, fps: float, sample_rate: int, short_side: int | None = None,
           decoder: str = "pyav", max_seconds: float | None = None, channels: str = "downmix",
           missing_ok: tuple[str, ...] = (), frames: str = "resampled", sample_format: str = "float",
           resampler: str = "ffmpeg", interpolation: str | None = None) -> Clip:
    """Decode ``path``: frames resampled to ``fps`` (nearest earlier frame) and resized so that the short side
    is ``short_side`` (aspect kept), audio mixed to mono (``channels``: FFmpeg's ``downmix`` or the plain ``mean``
    of the channels) and resampled to ``sample_rate``. A modality in ``missing_ok`` whose stream the file lacks is
    reported in ``Clip.missing`` instead of failing. ``frames``, ``sample_format`` and ``resampler``: see
    :func:`decode_stream`."""
    images, audio, pts, last = [], [], [], None
    for piece in decode_stream(path, fps=fps, sample_rate=sample_rate, short_side=short_side, decoder=decoder,
                               max_seconds=max_seconds, channels=channels, missing_ok=missing_ok, frames=frames,
                               sample_format=sample_format, resampler=resampler, interpolation=interpolation):
        images.append(piece.frames)
        audio.append(piece.audio)
        if piece.frame_pts is not None:
            pts.append(piece.frame_pts)
        last = piece
    return Clip(frames=np.concatenate(images), fps=last.fps, audio=np.concatenate(audio), sample_rate=sample_rate,
                duration=last.duration, missing=last.missing, frame_pts=np.concatenate(pts) if pts else None,
                header=last.header)


def decode_stream(path: str | Path, *, fps: float, sample_rate: int, short_side: int | None = None,
                  decoder: str = "pyav", max_seconds: float | None = None, channels: str = "downmix",
                  missing_ok: tuple[str, ...] = (), chunk_seconds: float | None = None, frames: str = "resampled",
                  sample_format: str = "float", resampler: str = "ffmpeg",
                  interpolation: str | None = None) -> Iterator[Clip]:
    """Decode ``path`` in pieces of about ``chunk_seconds`` (None: one piece), in one pass: each piece holds the
    frames and samples decoded since the previous one, so a long file is never held whole. The pieces, joined,
    are exactly what :func:`decode` returns; the last one has ``final`` set and the duration of the whole video.
    The checks (no frames, no samples, NaN) raise :class:`MediaError` from the piece where they are found.

    ``frames``: ``"resampled"`` (frames at ``fps``, each target instant taking the decoded frame nearest to it),
    ``"fps_filter"`` (exactly FFmpeg's ``fps`` filter: frame k fills the output slots from round(t_k * fps), halves
    rounded up, to the next frame's slot, the last one to round((t_last + its duration) * fps)) or ``"native"``
    (every decoded frame with its timestamp in ``Clip.frame_pts``; ``fps`` and ``short_side`` are then unused and
    ``Clip.fps`` is the stream's average rate). ``interpolation``: swscale's filter for the conversion to RGB (and
    any resize): None is PyAV's default (bilinear); ``"BICUBIC"`` is OpenCV's, which differs from it on frames of
    odd width or height, where the chroma must be interpolated. ``sample_format``: ``"s16"`` quantises the samples to 16-bit integers in FFmpeg's resampler (values k / 32768), as a decoder
    asked for ``pcm_s16le`` does; with ``channels="downmix"`` FFmpeg then uses its normalised mono matrix.
    ``resampler``: ``"resampy"`` decodes at the stream's own rate and resamples the whole signal with resampy's
    ``kaiser_best`` filter (AudioSet's VGGish input code); the audio then arrives with the last piece."""
    path = Path(path)
    if not path.exists():
        raise MediaError("file not found")
    if path.stat().st_size == 0:
        raise MediaError("empty file")
    if channels not in ("downmix", "mean"):
        raise ValueError(f"channels must be 'downmix' or 'mean', got {channels!r}")
    for name, value, allowed in (("frames", frames, FRAME_MODES), ("sample_format", sample_format, SAMPLE_FORMATS),
                                 ("resampler", resampler, RESAMPLERS), ("interpolation", interpolation, INTERPOLATIONS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if decoder == "pyav":
        audio_opts = _AudioOptions(channels, sample_format, resampler)
        pieces = _decode_pyav(path, fps, sample_rate, short_side, max_seconds, audio_opts, missing_ok,
                              chunk_seconds, frames=frames, interpolation=interpolation)
    elif decoder == "decord":
        if channels != "downmix" or missing_ok or (frames, sample_format, resampler, interpolation) != (
                "resampled", "float", "ffmpeg", None):
            raise ValueError("decoder 'decord' supports channels 'downmix', resampled float audio and no missing "
                             "modality; use pyav")
        pieces = iter([_decode_decord(path, fps, sample_rate, short_side, max_seconds)])
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {DECODERS}")
    for piece in pieces:
        if not np.isfinite(piece.audio).all():
            raise MediaError("audio contains NaN or inf samples")
        if piece.final:
            if piece.frame_start + len(piece.frames) == 0 and piece.has("video"):
                raise MediaError("no decodable video frames")
            if piece.sample_start + len(piece.audio) == 0 and piece.has("audio"):
                raise MediaError("no decodable audio samples")
        yield piece


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    # even sizes keep every pixel format happy
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


@dataclass(frozen=True)
class _AudioOptions:
    channels: str  # "downmix" | "mean"
    sample_format: str  # "float" | "s16"
    resampler: str  # "ffmpeg" | "resampy"


class _AudioSink:
    """Turns decoded audio frames into mono samples at the target rate, as :func:`decode_stream` describes."""

    def __init__(self, av, opts: _AudioOptions, sample_rate: int, max_samples: int | None):
        self.opts, self.sample_rate, self.max_samples = opts, sample_rate, max_samples
        s16 = opts.sample_format == "s16"
        native = opts.resampler == "resampy"
        rate = None if native else sample_rate
        if opts.channels == "downmix":
            self.resampler = av.AudioResampler(format="s16" if s16 else "flt", layout="mono", rate=rate)
        else:  # keep the layout, average the channels here
            self.resampler = av.AudioResampler(format="s16p" if s16 else "fltp", rate=rate)
        self.native_rate: int | None = None
        self.parts: list[np.ndarray] = []  # resampy: the whole native-rate signal, resampled at the end
        self.samples = 0

    def take(self, frame, out: list) -> None:
        for rf in self.resampler.resample(frame):
            self._add(rf, out)

    def flush(self, out: list) -> None:
        for rf in self.resampler.resample(None):
            self._add(rf, out)
        if self.opts.resampler == "resampy" and self.parts:
            import resampy

            wav = np.concatenate(self.parts)
            if self.native_rate != self.sample_rate:
                wav = resampy.resample(wav, self.native_rate, self.sample_rate, filter="kaiser_best")
            self.parts = []
            self._emit(wav, out)

    def _add(self, rf, out: list) -> None:
        a = rf.to_ndarray()
        a = a.reshape(a.shape[0] if a.ndim > 1 and self.opts.channels == "mean" else 1, -1)
        # 16-bit integers as the reference reads them (k / 32768), in float64 until resampled or averaged
        a = a / 32768.0 if a.dtype == np.int16 else a.astype(np.float64, copy=False)
        a = a.mean(0) if self.opts.channels == "mean" else a.reshape(-1)
        if self.opts.resampler == "resampy":
            self.native_rate = self.native_rate or rf.sample_rate
            self.parts.append(a)
        else:
            self._emit(a, out)

    def _emit(self, a: np.ndarray, out: list) -> None:
        if self.max_samples is not None:
            a = a[: max(0, self.max_samples - self.samples)]
        self.samples += len(a)
        # resampy's output stays float64 (AudioSet's input code frames it in float64)
        out.append(a if self.opts.resampler == "resampy" else a.astype(np.float32))


def read_header(stream) -> VideoHeader:
    return VideoHeader(frames=int(stream.frames or 0), average_rate=stream.average_rate,
                       duration=None if stream.duration is None else int(stream.duration),
                       time_base=stream.time_base)


def _decode_pyav(path: Path, fps: float, sample_rate: int, short_side: int | None, max_seconds: float | None,
                 audio_opts: _AudioOptions, missing_ok: tuple[str, ...], chunk_seconds: float | None,
                 frames: str = "resampled", interpolation: str | None = None) -> Iterator[Clip]:
    import av

    native = frames == "native"
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(f"cannot open container: {_short(e).replace(f': {str(path)!r}', '')}") from None
    with container:
        missing = tuple(m for m in ("video", "audio") if not getattr(container.streams, m))
        for m in missing:
            if m not in missing_ok:
                raise MediaError(f"no {m} stream")
        if len(missing) == 2:
            raise MediaError("no video stream and no audio stream")
        vs = None if "video" in missing else container.streams.video[0]
        as_ = None if "audio" in missing else container.streams.audio[0]
        header = None
        if vs is not None:
            vs.thread_type = "AUTO"
            header = read_header(vs)
            width, height = _target_size(vs.codec_context.width, vs.codec_context.height,
                                         None if native else short_side)
            period = _frame_period(vs)
            if native:
                fps = float(vs.average_rate or vs.guessed_rate or Fraction(25))
        else:
            width = height = 2
            period = 0.0
        max_samples = None if max_seconds is None else int(max_seconds * sample_rate)
        sink = _AudioSink(av, audio_opts, sample_rate, max_samples)
        state = {"frames": [], "pts": [], "audio": [], "frame_start": 0, "sample_start": 0}
        step = 1.0 / fps
        next_t = 0.0
        last_video_t = 0.0
        # resampy needs the whole signal: one piece
        chunked = chunk_seconds and audio_opts.resampler == "ffmpeg"
        chunk_frames = math.inf if not chunked else max(1, int(chunk_seconds * fps))
        chunk_samples = math.inf if not chunked else max(1, int(chunk_seconds * sample_rate))

        def piece(final: bool, duration: float) -> Clip:
            frames = (np.stack(state["frames"]) if state["frames"]
                      else np.zeros((0, height, width, 3), np.uint8))
            audio = np.concatenate(state["audio"]) if state["audio"] else np.zeros(0, np.float32)
            out = Clip(frames=frames, fps=fps, audio=audio, sample_rate=sample_rate, duration=duration,
                       frame_start=state["frame_start"], sample_start=state["sample_start"], missing=missing,
                       final=final, frame_pts=np.asarray(state["pts"], np.int64) if native else None,
                       header=header)
            state["frame_start"] += len(frames)
            state["sample_start"] += len(audio)
            state["frames"], state["pts"], state["audio"] = [], [], []
            return out

        def pending_size() -> tuple[int, int]:
            return len(state["frames"]), sum(len(a) for a in state["audio"])

        def rgb(frame) -> np.ndarray:
            return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation=interpolation)

        slots = {"next": 0}
        held = None

        def emit(item, until: int) -> None:
            """``item``'s frame in every output slot before ``until`` not yet filled (converted once, if at all)."""
            img = None
            while slots["next"] < until:
                img = rgb(item[0]) if img is None else img
                state["frames"].append(img)
                slots["next"] += 1

        streams = [s for s in (vs, as_) if s is not None]
        failed = None
        try:
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        t = _frame_time(frame, vs)
                        if max_seconds is not None and t >= max_seconds:
                            continue
                        last_video_t = max(last_video_t, t)
                        if native:
                            state["frames"].append(frame.to_ndarray(format="rgb24"))
                            state["pts"].append(frame.pts if frame.pts is not None else len(state["pts"]))
                            continue
                        if frames == "fps_filter":
                            # the frame held fills the slots up to this frame's; this one is held in turn
                            if frame.pts is not None and frame.time_base is not None:
                                t = (frame.pts - (vs.start_time or 0)) * frame.time_base  # exact
                            if held is not None:
                                emit(held, _fps_slot(t, fps))
                            held = (frame, t)
                            continue
                        if t + 0.5 * period < next_t:
                            continue
                        img = rgb(frame)
                        # a frame stands in for every target instant up to the next decoded frame
                        while next_t <= t + 0.5 * period:
                            state["frames"].append(img)
                            next_t += step
                    else:
                        sink.take(frame, state["audio"])
                n_frames, n_samples = pending_size()
                if n_frames >= chunk_frames or n_samples >= chunk_samples:
                    yield piece(False, min(_covered(state, fps, sample_rate, missing)))
            if held is not None:  # the last frame lasts its own duration
                duration = getattr(held[0], "duration", None)
                t_end = held[1] + (duration * held[0].time_base if duration else Fraction(period))
                emit(held, _fps_slot(t_end, fps))
            sink.flush(state["audio"])
        except (av.error.FFmpegError, ValueError) as e:
            # keep the message, not the exception: its traceback would hold this frame, and with it the codec
            # contexts and their decode threads, in a reference cycle that a forked decode worker later frees
            failed = _short(e)
    n_frames, n_samples = pending_size()
    total_frames, total_samples = state["frame_start"] + n_frames, state["sample_start"] + n_samples
    if failed is not None and ((vs is not None and not total_frames) or (as_ is not None and not total_samples)):
        raise MediaError(f"decoding failed: {failed}") from None
    # after damage, what decoded cleanly before it is kept: the duration says how much
    video_seconds = last_video_t + period if vs is not None else math.inf
    audio_seconds = total_samples / sample_rate if as_ is not None else math.inf
    duration = min(video_seconds, audio_seconds) if total_samples or as_ is None else 0.0
    yield piece(True, max(duration, 0.0))


def _fps_slot(t: Fraction | float, fps: float) -> int:
    """The output slot of an instant ``t`` (seconds) at ``fps``, rounded to the nearest with halves up, as FFmpeg's
    ``fps`` filter rescales timestamps (``AV_ROUND_NEAR_INF``), in exact arithmetic."""
    return int(math.floor(Fraction(t) * Fraction(fps).limit_denominator(1 << 20) + Fraction(1, 2)))


def _covered(state: dict, fps: float, sample_rate: int, missing: tuple[str, ...]) -> list[float]:
    """Seconds decoded so far per present stream (a piece's provisional duration)."""
    out = []
    if "video" not in missing:
        out.append((state["frame_start"] + len(state["frames"])) / fps)
    if "audio" not in missing:
        out.append((state["sample_start"] + sum(len(a) for a in state["audio"])) / sample_rate)
    return out


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
