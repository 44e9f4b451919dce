"""SeLaVi's encoders (the benchmark's "main" features): video R(2+1)D-18 and audio ResNet-9, 512-d each.

Weights: the official SeLaVi checkpoint (``selavi_vgg_sound.pth``; the other zoo files share its layout). Both
modalities come from the one file; the clustering heads in it are dropped. Preprocessing follows the AVCA/TCaF
extraction (docs/backbones.md lists every constant and option):

- video: 30 frames at 30 fps from the window start (1 s), short side 112, centre crop 112, /255, mean 0.45,
  std 0.225;
- audio: 1 s of mono 44.1 kHz as 16-bit integer values, a log filter bank like python_speech_features' ``logfbank``
  (pre-emphasis 0.97, 20 ms rectangular frames every 10 ms, 1024-point power spectrum / 1024, 257 triangular mel
  filters 0 Hz-Nyquist on FFT bins, zeros replaced by float64 eps before the log), 257x99, then (x - 1.93) / 17.89.

Windows: consecutive seconds (``placement: consecutive``) or the reference extraction's placement
(``placement: reference``: (int(D) - 1) windows spread over the first D - 1 seconds, bunched at the start of short
videos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    frames_at,
    register,
    require_weights,
    resize_crop,
)
from extractors.checkpoints import load_state_dict, load_strict
from extractors.media.decode import MediaError
from extractors.params import choice, local_file

WHERE = ("download https://dl.fbaipublicfiles.com/selavi/selavi_vgg_sound.pth (SeLaVi trained on VGG-Sound; "
         "selavi_{ave,kinetics_sound,kinetics}.pth have the same layout)")
HEADS = ("mlp_v", "mlp_a")  # the clustering heads: not part of the features
VIDEO_MEAN, VIDEO_STD = 0.45, 0.225
SPEC_MEAN, SPEC_STD = 1.93, 17.89
MODES = ("clean", "reference")


def video_encoder() -> nn.Module:
    import torchvision

    net = torchvision.models.video.r2plus1d_18(weights=None)
    net.fc = nn.Identity()
    return net


def audio_encoder() -> nn.Module:
    """ResNet with one BasicBlock per stage and a 1-channel 7x7 stride-2 stem."""
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [1, 1, 1, 1])
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    return net


class SeLaViEncoders(nn.Module):
    def __init__(self):
        super().__init__()
        self.video = video_encoder()
        self.audio = audio_encoder()


def load_selavi(path) -> SeLaViEncoders:
    nets = SeLaViEncoders()
    load_strict(nets, load_state_dict(path), str(path),
                mapping={"video_network.base.": "video.", "audio_network.base.": "audio."}, drop=HEADS)
    return nets


# ------------------------------------------------------------------------------------------ audio preprocessing
def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def fbank_matrix(n_filters: int, n_fft: int, sample_rate: int, low: float = 0.0, high: float | None = None):
    """(n_filters, n_fft//2+1) triangles between mel-spaced FFT bins (bin = floor((n_fft+1) f / rate)); a filter
    whose edges fall on one bin is all zeros, as in the reference."""
    high = sample_rate / 2 if high is None else high
    edges = np.floor((n_fft + 1) * mel_to_hz(np.linspace(hz_to_mel(low), hz_to_mel(high), n_filters + 2))
                     / sample_rate).astype(int)
    out = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        a, b, c = edges[j], edges[j + 1], edges[j + 2]
        for i in range(a, b):
            out[j, i] = (i - a) / (b - a)
        for i in range(b, c):
            out[j, i] = (c - i) / (c - b)
    return out


def log_fbank(wav: np.ndarray, sample_rate: int, fbank: np.ndarray, win: float = 0.02, step: float = 0.01,
              n_fft: int = 1024, preemph: float = 0.97) -> np.ndarray:
    """(frames, filters) float64 log filter-bank energies of one signal, computed like ``logfbank``."""
    x = np.asarray(wav, np.float64)
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    length = int(math.floor(win * sample_rate + 0.5))
    hop = int(math.floor(step * sample_rate + 0.5))
    n = 1 if len(x) <= length else 1 + int(math.ceil((len(x) - length) / hop))
    padded = np.zeros((n - 1) * hop + length)
    padded[:len(x)] = x
    idx = np.arange(length)[None, :] + hop * np.arange(n)[:, None]
    frames = padded[idx]
    if length > n_fft:  # the reference truncates frames longer than the FFT
        frames = frames[:, :n_fft]
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    feat = power @ fbank.T
    feat[feat == 0] = np.finfo(float).eps
    return np.log(feat)


@register
class SeLaVi(Backbone):
    name = "selavi"
    weights_param = "weights"
    declared_params = {"weights": local_file(), "mode": choice("clean", MODES)}
    DIM = 512
    FPS = 30.0
    FRAMES = 30
    SIZE = 112
    SAMPLE_RATE = 44100
    N_FILTERS = 257
    N_FFT = 1024

    @classmethod
    def check_file(cls, param, path, name):
        if param == cls.weights_param:
            load_selavi(path)

    def __init__(self, weights, mode):
        super().__init__(weights=weights, mode=mode)
        if mode not in MODES:
            raise BackboneError(f"backbone 'selavi': mode must be one of {MODES}, got {mode!r}")
        path = require_weights("selavi", weights, WHERE)
        self.nets = load_selavi(path)
        self.reference = mode == "reference"
        # the reference's placement needs the header and every frame's timestamp: the whole video
        self.streamable = not self.reference
        self.modalities = ("audio", "video")
        self.specs = {m: ModalitySpec(1.0, 1.0, self.DIM) for m in self.modalities}
        if self.reference:
            self.input_format = InputFormat(frames="native", sample_rate=self.SAMPLE_RATE, channels="downmix",
                                            sample_format="s16")
        else:
            self.input_format = InputFormat(fps=self.FPS, short_side=self.SIZE, sample_rate=self.SAMPLE_RATE,
                                            channels="downmix")
        self.fbank = fbank_matrix(self.N_FILTERS, self.N_FFT, self.SAMPLE_RATE)

    def notes(self, clip):
        if not self.reference or clip.header is None or not clip.header.average_rate:
            return []
        return list(ReferenceGeometry.of(clip).fallbacks)

    def plan_clip(self, modality, clip):
        if not self.reference:
            return self.plan(modality, clip.duration)
        geo = ReferenceGeometry.of(clip)
        starts = geo.start_frames() / geo.fps
        return np.stack([starts, np.minimum(starts + 1.0, max(clip.duration, 0.0))], 1).astype(np.float64)

    def window_data(self, clip, modality, starts):
        if self.reference:
            geo = ReferenceGeometry.of(clip)
            first = np.rint(np.asarray(starts) * geo.fps).astype(int)
            if modality == "audio":
                wav = np.round(clip.audio.astype(np.float64) * 32768.0)  # exactly the 16-bit integers, once
                return torch.from_numpy(np.stack([self.reference_spectrogram(wav, clip.sample_rate,
                                                                             geo.audio_start(f, clip))
                                                  for f in first])[:, None])
            return torch.stack([reference_video_input(clip.frames[geo.frame_indices(f, clip)])
                                for f in first])
        if modality == "audio":
            wav = np.clip(np.round(clip.audio * 32768.0), -32768, 32767)  # 16-bit values, once per piece
            return torch.from_numpy(np.stack([self.spectrogram(clip, s, wav) for s in starts])[:, None])
        return resize_crop(frames_at(clip, starts, self.FRAMES), (self.SIZE,), (self.SIZE, self.SIZE))

    def spectrogram(self, clip, start: float, wav: np.ndarray | None = None) -> np.ndarray:
        """(257, 99) z-normalised log filter bank of the second of audio from ``start``; like the reference, a
        window reaching past the end is moved back to end with the audio (zero-padded if the audio is shorter).
        ``wav``: the clip's audio as 16-bit integer values, if already computed."""
        rate = clip.sample_rate
        if wav is None:  # the reference reads 16-bit integers
            wav = np.clip(np.round(clip.audio * 32768.0), -32768, 32767)
        first = int(round(start * rate)) - clip.sample_start
        if first < 0:
            raise ValueError(f"window at {start}s starts before the decoded audio (sample {clip.sample_start})")
        first = max(0, min(first, len(wav) - rate))
        seg = np.zeros(rate, np.float64)
        part = wav[first:first + rate]
        seg[:len(part)] = part
        spec = log_fbank(seg, rate, self.fbank, n_fft=self.N_FFT).T
        return ((spec - SPEC_MEAN) / SPEC_STD).astype(np.float32)

    def reference_spectrogram(self, wav: np.ndarray, rate: int, first: int) -> np.ndarray:
        """The reference's (257, 99) input from sample ``first`` of the whole 16-bit mono track ``wav`` (integer
        values): the log filter bank in float64, cast to float32, then z-normalised in float32."""
        seg = wav[first:first + rate]
        if len(seg) != rate:
            raise MediaError(f"{len(wav)} audio samples: the reference needs one second ({rate}) for a window")
        spec = log_fbank(seg, rate, self.fbank, n_fft=self.N_FFT).astype(np.float32).T
        return (spec - np.float32(SPEC_MEAN)) / np.float32(SPEC_STD)

    def embed(self, modality, x):
        if modality == "audio":
            return self.nets.audio(x.float())
        x = x.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
        if x.dtype == torch.uint8:
            x = (x.float() / 255.0 - VIDEO_MEAN) / VIDEO_STD
        return self.nets.video(x.float())


# ------------------------------------------------------------------------------------------ the reference
@dataclass(frozen=True)
class ReferenceGeometry:
    """Where the AVCA/TCaF SeLaVi extraction puts its windows, from the container header as it reads it:
    ``frames`` (the header's frame count), ``fps`` (its average rate) and ``duration`` (the stream's duration in
    its time base). A header without a frame count or duration gets one from what decoded (``fallbacks`` says
    which); the reference itself gives such a video no window."""

    frames: int
    fps: float
    duration: int
    fallbacks: tuple[str, ...] = ()

    @classmethod
    def of(cls, clip) -> ReferenceGeometry:
        h = clip.header
        if h is None or not h.average_rate:
            raise MediaError("no video stream header with an average frame rate: the reference placement needs one")
        fps = float(h.average_rate)
        frames, duration, fallbacks = h.frames, h.duration, []
        if frames <= 0:
            frames = clip.n_frames
            fallbacks.append(f"header has no frame count: {frames} decoded frames used")
        if duration is None or duration <= 0:
            # the frame count at the average rate, in the stream's time base
            duration = int(round(frames / fps / float(h.time_base)))
            fallbacks.append(f"header has no duration: {frames} frames at {fps:g} fps used")
        return cls(frames, fps, duration, tuple(fallbacks))

    def count(self) -> int:
        return int(self.frames / self.fps) - 1

    def start_frames(self) -> np.ndarray:
        """Window i of n = int(frames / fps) - 1 starts at the integer frame
        int((frames - fps) * (100 i) / ((n // 10 + 1) * 1000))."""
        n = self.count()
        if n < 1:
            raise MediaError(f"{self.frames} frames at {self.fps:g} fps by the header: the reference extraction "
                             "places no window in a video under 2 s")
        delta = max(self.frames - self.fps, 0)
        return np.array([int(delta * (i * 100) / (((n // 10) + 1) * 1000)) for i in range(n)], np.int64)

    def pts_range(self, first: int) -> tuple[int, int]:
        """The timestamps (stream time base) of the window's first and last native frame."""
        step = self.duration / self.frames
        return int(first * step), int((first + self.fps - 1) * step)

    def frame_indices(self, first: int, clip) -> np.ndarray:
        """Indices into ``clip.frames`` of the 30 frames of the window starting at frame ``first``: the frames
        whose timestamps fall in the window's range, plus the first one after it, then 30 picked by
        ``linspace(0, fps - 1, 30)`` (truncated, clamped to the last)."""
        lo, hi = self.pts_range(first)
        pts = clip.frame_pts
        after = np.nonzero(pts > hi)[0]
        stop = after[0] + 1 if len(after) else len(pts)
        keep = np.nonzero(pts[:stop] >= lo)[0]
        if not len(keep):
            raise MediaError(f"the window at frame {first} (timestamps {lo}-{hi}) has no decoded frame; the header "
                             f"says {self.frames} frames, {clip.n_frames} decoded")
        # ordered by timestamp; a repeated timestamp keeps its last frame (the reference keys frames by timestamp)
        keep = keep[np.lexsort((keep, pts[keep]))]
        idx = keep[np.r_[pts[keep][1:] != pts[keep][:-1], True]]
        pick = torch.linspace(0, self.fps - 1, SeLaVi.FRAMES).clamp(0, len(idx) - 1).long().numpy()
        return idx[pick]

    def audio_start(self, first: int, clip) -> int:
        """The window's first audio sample: round(first / fps * rate), moved back to end with the track if the
        second would reach past it."""
        rate = clip.sample_rate
        start = int(np.round(first / self.fps * rate))
        if start + rate > clip.n_samples:
            start = clip.n_samples - rate
        return start


def reference_video_input(frames: np.ndarray) -> torch.Tensor:
    """(30, H, W, 3) uint8 -> (30, 112, 112, 3) float, as the reference: /255, minus the mean, over the std, then
    the short side scaled to 112 (the long side floored) with bilinear interpolation without antialiasing, then a
    centre crop at ceil((L - 112) / 2)."""
    size = SeLaVi.SIZE
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0
    x = ((x - torch.tensor([VIDEO_MEAN] * 3)) / torch.tensor([VIDEO_STD] * 3)).permute(0, 3, 1, 2).contiguous()
    h, w = x.shape[-2:]
    if not ((w <= h and w == size) or (h <= w and h == size)):
        new = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        x = F.interpolate(x, size=new, mode="bilinear", align_corners=False)
        h, w = new
    top, left = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    return x[:, :, top:top + size, left:left + size].permute(0, 2, 3, 1).contiguous()
