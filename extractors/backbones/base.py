"""The backbone interface: modalities, their windows, the input format decoding must deliver, and the module.

A backbone declares, per modality it serves (``audio`` and/or ``video``), a :class:`ModalitySpec`: the window
length and hop in seconds and the output dimension; and one :class:`InputFormat` saying what decoding must deliver
(frame rate and short side of the frames; sample rate and channel handling of the audio).

``preprocess`` runs on the CPU inside decode workers and turns a decoded :class:`Clip` (or a piece of a long one,
see :func:`stream_windows`) into :class:`Windows`: per modality the window tensors, and each window's (start, end)
time in seconds. ``embed`` runs on the device on windows pooled from many videos. A backbone is a subclass registered
with :func:`register`, or a class another package names in the entry-point group ``avzsl.backbones``
(``name = "module:Class"``); entry points are loaded lazily, the first time a name is not in the registry.

A feature set may take each modality from a different backbone (:func:`build_feature_set`): the result is one
:class:`Combined` backbone that decodes once with the audio format of the audio backbone and the video format of the
video backbone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from extractors.backbone_params import ENTRY_POINT_GROUP
from extractors.feature_sets import BackboneError, normalize_feature_set
from extractors.media.decode import FRAME_MODES, INTERPOLATIONS, RESAMPLERS, SAMPLE_FORMATS, Clip
from extractors.params import Param, ParamError, check_values, defaults

MODALITIES = ("audio", "video")
BACKBONES: dict[str, type[Backbone]] = {}
_PLUGINS_LOADED: dict[str, str] = {}  # entry-point name -> where it came from (for messages)


def register(cls: type[Backbone]) -> type[Backbone]:
    BACKBONES[cls.name] = cls
    return cls


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backbone_class(name: str) -> type[Backbone]:
    """The class registered under ``name``; else the entry point of that name, loaded now (once)."""
    if name in BACKBONES:
        return BACKBONES[name]
    eps = _entry_points()
    if name not in eps:
        raise BackboneError(f"unknown backbone {name!r}; known: {sorted(set(BACKBONES) | set(eps))} "
                            f"(plugins register in the entry-point group {ENTRY_POINT_GROUP!r})")
    ep = eps[name]
    try:
        cls = ep.load()
    except Exception as e:  # noqa: BLE001 - a broken plugin is named with its error
        raise BackboneError(f"backbone {name!r}: cannot load entry point {ep.value!r}: {type(e).__name__}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise BackboneError(f"backbone {name!r}: entry point {ep.value!r} is not a Backbone subclass")
    if getattr(cls, "name", None) != name:
        cls.name = name
    BACKBONES[name] = cls
    _PLUGINS_LOADED[name] = ep.value
    return cls


def available_backbones() -> list[str]:
    return sorted(set(BACKBONES) | set(_entry_points()))


def build_backbone(name: str, params: dict | None = None, where: str = "") -> Backbone:
    """An instance of backbone ``name`` with ``params`` over its defaults; unknown parameters are an error listing
    the known ones. ``where`` (e.g. ``feature_sets.x.audio``) prefixes messages."""
    prefix = f"{where}: " if where else ""
    try:
        cls = backbone_class(name)
    except BackboneError as e:
        raise BackboneError(f"{prefix}{e}") from None
    params = dict(params or {})
    unknown = set(params) - set(cls.default_params)
    if unknown:
        raise BackboneError(f"{prefix}backbone {name!r}: unknown parameter(s) {sorted(unknown)}; "
                            f"known: {sorted(cls.default_params)}")
    if cls.declared_params:
        try:
            check_values(cls.declared_params, params, "params", f"backbone {name!r}")
        except ParamError as e:
            raise BackboneError(f"{prefix}{e}") from None
    try:
        return cls(**{**cls.default_params, **params})
    except BackboneError as e:
        raise BackboneError(f"{prefix}{e}") from None


@dataclass(frozen=True)
class ModalitySpec:
    """One modality of a backbone: windows of ``window_seconds`` every ``hop_seconds``, ``dim`` features each."""

    window_seconds: float
    hop_seconds: float
    dim: int

    def __post_init__(self):
        if not (self.window_seconds > 0 and self.hop_seconds > 0 and self.dim > 0):
            raise BackboneError(f"window, hop and dim must be positive, got {self}")


@dataclass(frozen=True)
class InputFormat:
    """What decoding must deliver. Video: frames at ``fps``, resized so the short side is ``short_side`` (None: as
    decoded); ``frames="native"``: every decoded frame at full size with its timestamp, and the container header
    (``Clip.frame_pts``, ``Clip.header``); ``frames="fps_filter"``: FFmpeg's ``fps`` filter exactly;
    ``interpolation``: swscale's filter for the RGB conversion (``"BICUBIC"``: OpenCV's). Audio: ``sample_rate``; ``channels`` ``"downmix"`` is FFmpeg's standard
    mono down-mix (the reference extractions' ``ffmpeg -ac 1``), ``"mean"`` the plain average of all channels (LFE
    included, as VGGish's preprocessing does); ``sample_format="s16"`` quantises to 16-bit integers in FFmpeg (a
    decoder asked for ``pcm_s16le``); ``resampler="resampy"`` resamples the whole signal with resampy instead of
    FFmpeg (see :func:`extractors.media.decode.decode_stream`)."""

    fps: float | None = None
    short_side: int | None = None
    sample_rate: int | None = None
    channels: str = "downmix"
    frames: str = "resampled"
    sample_format: str = "float"
    resampler: str = "ffmpeg"
    interpolation: str | None = None

    def __post_init__(self):
        if self.channels not in ("downmix", "mean"):
            raise BackboneError(f"channels must be 'downmix' or 'mean', got {self.channels!r}")
        for name, allowed in (("frames", FRAME_MODES), ("sample_format", SAMPLE_FORMATS), ("resampler", RESAMPLERS),
                              ("interpolation", INTERPOLATIONS)):
            if getattr(self, name) not in allowed:
                raise BackboneError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def decode_options(self) -> dict:
        """The keyword arguments of :func:`extractors.media.decode.decode_stream` this format asks for."""
        return {"fps": self.fps or 1.0, "sample_rate": self.sample_rate or 16000, "short_side": self.short_side,
                "channels": self.channels, "frames": self.frames, "sample_format": self.sample_format,
                "resampler": self.resampler, "interpolation": self.interpolation}


class Windows(dict):
    """The windows of one video (or of a piece of it): ``{modality: (T, ...) CPU tensor}``, and in ``times``
    ``{modality: (T, 2) float64}`` each window's start and end in seconds from the start of the video."""

    def __init__(self, data: dict[str, torch.Tensor] | None = None, times: dict[str, np.ndarray] | None = None):
        super().__init__(data or {})
        self.times = dict(times or {})
        for m in self:
            if len(self.times.get(m, ())) != len(self[m]):
                raise ValueError(f"{m}: {len(self[m])} windows but {len(self.times.get(m, ()))} window times")

    def __reduce__(self):  # travels from decode workers to the main process
        return (Windows, (dict(self), self.times))


class Backbone(nn.Module):
    name: ClassVar[str]
    # every parameter with its type, allowed values and default (extractors.params), read at plan time from the
    # source (extractors.backbones.declared); a plugin may give default_params alone, then only names are checked
    declared_params: ClassVar[dict[str, Param]] = {}
    default_params: ClassVar[dict] = {}
    weights_param: ClassVar[str | None] = None  # the parameter that names a weight file, if any

    # set by subclasses in __init__
    modalities: tuple[str, ...] = MODALITIES
    specs: dict[str, ModalitySpec]
    input_format: InputFormat
    # False when window placement depends on the whole video's duration (see :meth:`plan`): streaming then holds a
    # video's frames and samples until its last piece
    streamable: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "declared_params" in cls.__dict__:
            cls.default_params = defaults(cls.declared_params)

    def __init__(self, **params):
        super().__init__()
        self.params = params

    @classmethod
    def check_file(cls, param: str, path: Path, name: str) -> None:
        """Check a fetched file for parameter ``param`` before it gets its final ``name``: a checkpoint has the keys
        and shapes this backbone loads. Raises :class:`BackboneError` saying what does not fit. The default checks
        nothing beyond the fetch's check of the file's kind (extractors/weights.py)."""

    # ---------------------------------------------------------------- what subclasses implement
    def window_data(self, clip: Clip, modality: str, starts: np.ndarray) -> torch.Tensor:
        """The input tensors of the windows of ``modality`` that start at ``starts`` (seconds from the start of the
        video; ``clip`` may be a piece of it: its ``frame_start`` / ``sample_start`` say where it begins). A window
        reads video frames (modality ``video``) or audio samples (``audio``) only, within its [start, start + window)
        plus at most :data:`READ_AHEAD_SECONDS`."""
        raise NotImplementedError

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) windows of one modality -> (B, D) features."""
        raise NotImplementedError

    def plan(self, modality: str, duration: float) -> np.ndarray:
        """(T, 2) start and end of every window of ``modality`` in a video of ``duration`` seconds. The default
        is :func:`window_times`; an override must keep the starts ``k * hop`` for every window that ends inside the
        video (windows are cut at those starts while decoding), unless the backbone sets ``streamable = False``."""
        return window_times(duration, self.specs[modality])

    def notes(self, clip: Clip) -> list[str]:
        """What a person should know about how this whole decoded clip was read (e.g. a rule that stood in for a
        missing header field); recorded with the video in the store's notes."""
        return []

    def plan_clip(self, modality: str, clip: Clip) -> np.ndarray:
        """The windows of ``modality`` in a whole decoded clip (or its final piece: ``n_frames``, ``n_samples``,
        ``header`` and ``duration`` then describe the whole video). Default: :meth:`plan` of its duration; a
        backbone whose placement needs more (the header, the frame count) overrides this and sets
        ``streamable = False``."""
        return self.plan(modality, clip.duration)

    # ---------------------------------------------------------------- provided
    def preprocess(self, clip: Clip, modalities: Sequence[str] | None = None) -> Windows:
        """Every window of a whole decoded clip, per modality (default: the backbone's modalities that the clip
        has): the tensors, and their (start, end) times in ``.times``."""
        out = Windows()
        for m in modalities or [m for m in self.modalities if clip.has(m)]:
            times = self.plan_clip(m, clip)
            out[m], out.times[m] = self.window_data(clip, m, times[:, 0]), times
        return out

    def config(self) -> dict:
        return {"backbone": self.name, **self.params}

    def dim(self, modality: str) -> int:
        return self.specs[modality].dim

    # compatibility accessors (one backbone serving both modalities)
    @property
    def sample_rate(self) -> int:
        return self.input_format.sample_rate

    @property
    def video_fps(self) -> float:
        return self.input_format.fps

    @property
    def video_short_side(self) -> int | None:
        return self.input_format.short_side

    @property
    def audio_dim(self) -> int:
        return self.specs["audio"].dim

    @property
    def video_dim(self) -> int:
        return self.specs["video"].dim

    @property
    def audio_step_seconds(self) -> float:
        return self.specs["audio"].hop_seconds

    @property
    def video_step_seconds(self) -> float:
        return self.specs["video"].hop_seconds


class Combined(Backbone):
    """Audio from one backbone, video from another (e.g. VGGish + C3D); one decode serves both."""

    name = "combined"

    def __init__(self, audio: Backbone, video: Backbone):
        super().__init__()
        for m, b in (("audio", audio), ("video", video)):
            if m not in b.modalities:
                raise BackboneError(f"backbone {b.name!r} has no {m} modality (it serves {list(b.modalities)})")
        self.parts = nn.ModuleDict({"audio": audio, "video": video})
        self.modalities = MODALITIES
        self.specs = {"audio": audio.specs["audio"], "video": video.specs["video"]}
        vf, af = video.input_format, audio.input_format
        self.input_format = InputFormat(fps=vf.fps, short_side=vf.short_side, frames=vf.frames,
                                        interpolation=vf.interpolation,
                                        sample_rate=af.sample_rate, channels=af.channels,
                                        sample_format=af.sample_format, resampler=af.resampler)

    @property
    def streamable(self) -> bool:
        return all(p.streamable for p in self.parts.values())

    def plan(self, modality, duration):
        return self.parts[modality].plan(modality, duration)

    def plan_clip(self, modality, clip):
        return self.parts[modality].plan_clip(modality, clip)

    def notes(self, clip):
        return [n for m in MODALITIES for n in self.parts[m].notes(clip)]

    def window_data(self, clip, modality, starts):
        return self.parts[modality].window_data(clip, modality, starts)

    def embed(self, modality, x):
        return self.parts[modality].embed(modality, x)

    def config(self) -> dict:
        return {m: self.parts[m].config() for m in MODALITIES}


def build_feature_set(fs: dict, where: str = "feature set") -> Backbone:
    """One backbone for a feature-set entry (see :func:`normalize_feature_set`): the shared backbone when both
    modalities name the same backbone and parameters, else a :class:`Combined` one."""
    spec = normalize_feature_set(fs, where)
    if spec["audio"] == spec["video"]:
        b = build_backbone(spec["audio"]["backbone"], spec["audio"]["params"], where)
        missing = [m for m in MODALITIES if m not in b.modalities]
        if missing:
            raise BackboneError(f"{where}: backbone {b.name!r} has no {missing[0]} modality; give {where}.{missing[0]} "
                                "its own backbone")
        return b
    parts = {m: build_backbone(spec[m]["backbone"], spec[m]["params"], f"{where}.{m}") for m in MODALITIES}
    try:
        return Combined(parts["audio"], parts["video"])
    except BackboneError as e:
        raise BackboneError(f"{where}: {e}") from None


# ------------------------------------------------------------------------------------------ windows
READ_AHEAD_SECONDS = 1.0  # how far past its end a window may read (e.g. one extra frame)


def window_starts(duration: float, window: float, hop: float | None = None) -> np.ndarray:
    """Start times of consecutive windows that fit in ``duration`` (at least one, padded if the clip is short)."""
    hop = hop or window
    n = 1 if duration <= window else int(math.floor((duration - window) / hop + 1e-6)) + 1
    return np.arange(n) * hop


def window_times(duration: float, spec: ModalitySpec) -> np.ndarray:
    """(T, 2) start and end of every window of a clip of ``duration`` seconds. The end of a window that reaches past
    the clip (the one padded window of a clip shorter than a window) is the end of the clip."""
    starts = window_starts(duration, spec.window_seconds, spec.hop_seconds)
    ends = np.minimum(starts + spec.window_seconds, max(duration, 0.0))
    return np.stack([starts, ends], 1).astype(np.float64)


def audio_windows(wav: np.ndarray, sample_rate: int, starts: np.ndarray, window: float,
                  sample_start: int = 0) -> np.ndarray:
    """(T, window*sr) slices of ``wav`` (whose first sample is sample ``sample_start`` of the video), zero-padded at
    the end; float64 if ``wav`` is, else float32."""
    size = int(round(window * sample_rate))
    out = np.zeros((len(starts), size), np.float64 if wav.dtype == np.float64 else np.float32)
    for i, s in enumerate(starts):
        first = int(round(s * sample_rate)) - sample_start
        if first < 0:
            raise ValueError(f"window at {s}s starts before the decoded audio (sample {sample_start})")
        seg = wav[first:][:size]
        out[i, :len(seg)] = seg
    return out


def frame_windows(frames: np.ndarray, fps: float, starts: np.ndarray, window: float, n_frames: int,
                  frame_start: int = 0) -> np.ndarray:
    """(T, n_frames, H, W, 3): ``n_frames`` frames spread evenly over each window (last frame repeated if short);
    ``frames[0]`` is frame ``frame_start`` of the video."""
    offsets = (np.arange(n_frames) + 0.5) * window / n_frames
    idx = np.floor((starts[:, None] + offsets[None, :]) * fps).astype(int) - frame_start
    if len(idx) and idx.min() < 0:
        raise ValueError(f"a window starts before the decoded frames (frame {frame_start})")
    return frames[np.clip(idx, 0, len(frames) - 1)]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[-3:-1]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[..., top:top + size, left:left + size, :]


@dataclass
class WindowPiece:
    """Windows of one piece of a video. ``final``: the video's last piece; ``counts`` then gives how many windows
    of each modality the whole video has (earlier pieces never hold more; a consumer cuts to it)."""

    windows: Windows
    final: bool
    counts: dict[str, int] | None = None
    duration: float | None = None
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def stream_windows(backbone: Backbone, pieces) -> Iterator[WindowPiece]:
    """Window a video decoded in pieces (:func:`extractors.media.decode.decode_stream`) while it decodes.

    A window is cut as soon as every present stream has been decoded past its end plus
    :data:`READ_AHEAD_SECONDS`; the rest when the last piece gives the duration. Only the frames and samples from
    the next window's start on are kept, so memory is bounded by the piece length plus a window. The windows (and
    their data) are exactly those :meth:`Backbone.preprocess` cuts from the whole decoded clip.
    """
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    pts: list[np.ndarray] = []  # frame timestamps, with frames="native"
    frame_start = sample_start = 0
    n_frames = n_samples = 0
    next_k = dict.fromkeys(MODALITIES, 0)
    fmt = None
    for piece in pieces:
        fmt = piece
        frames.append(piece.frames)
        audio.append(piece.audio)
        n_frames += len(piece.frames)
        n_samples += len(piece.audio)
        present = [m for m in backbone.modalities if piece.has(m)]
        buf = Clip(frames=np.concatenate(frames) if len(frames) > 1 else frames[0], fps=piece.fps,
                   audio=np.concatenate(audio) if len(audio) > 1 else audio[0], sample_rate=piece.sample_rate,
                   duration=piece.duration, frame_start=frame_start, sample_start=sample_start,
                   missing=piece.missing, header=piece.header,
                   frame_pts=None if piece.frame_pts is None else np.concatenate(pts + [piece.frame_pts]))
        frames, audio = [buf.frames], [buf.audio]
        pts = [] if buf.frame_pts is None else [buf.frame_pts]
        out = Windows()
        counts = None
        if piece.final:
            plans = {m: backbone.plan_clip(m, buf) for m in present}
            counts = {m: len(plans[m]) if m in plans else 0 for m in backbone.modalities}
        elif not backbone.streamable:
            plans = {}
        else:
            decoded = []
            if piece.has("video"):
                decoded.append(n_frames / piece.fps)
            if piece.has("audio"):
                decoded.append(n_samples / piece.sample_rate)
            limit = min(decoded) - READ_AHEAD_SECONDS
            plans = {}
            for m in present:
                s = backbone.specs[m]
                k = next_k[m]
                last = int(math.floor((limit - s.window_seconds) / s.hop_seconds + 1e-6)) if limit > s.window_seconds \
                    else -1
                starts = np.arange(k, max(k, last + 1)) * s.hop_seconds
                plans[m] = np.stack([starts, starts + s.window_seconds], 1).astype(np.float64)
        for m in present:
            times = plans[m][next_k[m]:] if piece.final else plans.get(m, np.zeros((0, 2)))
            if len(times):
                out[m], out.times[m] = backbone.window_data(buf, m, times[:, 0]), times
                next_k[m] += len(times)
        yield WindowPiece(out, piece.final, counts, piece.duration if piece.final else None, piece.missing,
                          tuple(backbone.notes(buf)) if piece.final else ())
        if piece.final:
            return
        # keep only what the next windows can read
        keep_frame, keep_sample = n_frames, n_samples
        for m in present:
            start = next_k[m] * backbone.specs[m].hop_seconds
            if m == "video":
                keep_frame = min(keep_frame, max(0, int(math.floor(start * piece.fps)) - 1))
            else:
                keep_sample = min(keep_sample, max(0, int(math.floor(start * piece.sample_rate)) - 1))
        keep_frame, keep_sample = max(keep_frame, frame_start), max(keep_sample, sample_start)
        frames = [buf.frames[keep_frame - frame_start:]]
        audio = [buf.audio[keep_sample - sample_start:]]
        pts = [] if buf.frame_pts is None else [buf.frame_pts[keep_frame - frame_start:]]
        frame_start, sample_start = keep_frame, keep_sample
    if fmt is None or not fmt.final:
        raise ValueError("the decoded pieces ended without a final piece")


def require_weights(backbone: str, path, how_to_get: str, param: str = "weights", folder: bool = False):
    """The local weight file (or folder) ``path``; else one error that says where to get it and which parameter
    to set."""
    from pathlib import Path

    kind = "folder" if folder else "file"
    if not path:
        raise BackboneError(f"backbone {backbone!r} needs its weights: {how_to_get}; then set the parameter "
                            f"{param!r} to the local {kind} (or give 'url' and, optionally, 'sha256' in the feature "
                            "set's params for the workflow to download it into resources/weights/)")
    p = Path(path).expanduser()
    if not (p.is_dir() if folder else p.is_file()):
        raise BackboneError(f"backbone {backbone!r}: weights {kind} not found: {p} (parameter {param!r}); "
                            f"{how_to_get}")
    return p


def frames_at(clip: Clip, starts: np.ndarray, n_frames: int) -> np.ndarray:
    """(T, n_frames, H, W, 3): ``n_frames`` consecutive frames at the clip's rate from each start (the last frame
    repeated past the end of the video)."""
    first = np.floor(np.asarray(starts) * clip.fps + 1e-6).astype(int)
    idx = first[:, None] + np.arange(n_frames)[None, :] - clip.frame_start
    if len(idx) and idx.min() < 0:
        raise ValueError(f"a window starts before the decoded frames (frame {clip.frame_start})")
    return clip.frames[np.clip(idx, 0, len(clip.frames) - 1)]


def resize_crop(frames: np.ndarray, resize: Sequence[int], crop: Sequence[int]) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> uint8 (..., crop_h, crop_w, 3): bilinear, antialiased resize (``resize`` = (h, w), or
    (short side,) keeping the aspect ratio), then a centre crop."""
    import torch.nn.functional as F

    lead = frames.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if len(resize) == 1:
        s = resize[0] / min(h, w)
        size = (max(resize[0], int(round(h * s))), max(resize[0], int(round(w * s))))
    else:
        size = (int(resize[0]), int(resize[1]))
    if (h, w) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    ch, cw = int(crop[0]), int(crop[-1])
    top, left = max(0, (size[0] - ch) // 2), max(0, (size[1] - cw) // 2)
    x = x[..., top:top + ch, left:left + cw]
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(*lead, *x.shape[1:]).contiguous()
