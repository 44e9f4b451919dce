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

WHERE = ("download https://dl.fbaipublicfiles.com/selavi/selavi_vgg_sound.pth (SeLaVi trained on VGG-Sound; "
         "selavi_{ave,kinetics_sound,kinetics}.pth have the same layout)")
HEADS = ("mlp_v", "mlp_a")  # the clustering heads: not part of the features
VIDEO_MEAN, VIDEO_STD = 0.45, 0.225
SPEC_MEAN, SPEC_STD = 1.93, 17.89
PLACEMENTS = ("consecutive", "reference")


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
    default_params = {"weights": None, "placement": "consecutive", "reference_resize": False}
    DIM = 512
    FPS = 30.0
    FRAMES = 30
    SIZE = 112
    SAMPLE_RATE = 44100
    N_FILTERS = 257
    N_FFT = 1024

    def __init__(self, weights, placement, reference_resize):
        super().__init__(weights=weights, placement=placement, reference_resize=reference_resize)
        if placement not in PLACEMENTS:
            raise BackboneError(f"backbone 'selavi': placement must be one of {PLACEMENTS}, got {placement!r}")
        path = require_weights("selavi", weights, WHERE)
        self.nets = load_selavi(path)
        self.placement = placement
        self.reference_resize = bool(reference_resize)
        self.streamable = placement == "consecutive"
        self.modalities = ("audio", "video")
        self.specs = {m: ModalitySpec(1.0, 1.0, self.DIM) for m in self.modalities}
        # reference_resize: decode at full size, resize the normalised float frames here (without antialiasing)
        self.input_format = InputFormat(fps=self.FPS, short_side=None if self.reference_resize else self.SIZE,
                                        sample_rate=self.SAMPLE_RATE, channels="downmix")
        self.fbank = fbank_matrix(self.N_FILTERS, self.N_FFT, self.SAMPLE_RATE)

    def plan(self, modality, duration):
        if self.placement == "consecutive":
            return super().plan(modality, duration)
        starts = reference_starts(duration)
        return np.stack([starts, np.minimum(starts + 1.0, max(duration, 0.0))], 1).astype(np.float64)

    def window_data(self, clip, modality, starts):
        if modality == "audio":
            return torch.from_numpy(np.stack([self.spectrogram(clip, s) for s in starts])[:, None])
        frames = frames_at(clip, starts, self.FRAMES)
        if not self.reference_resize:
            return resize_crop(frames, (self.SIZE,), (self.SIZE, self.SIZE))
        x = (torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0 - VIDEO_MEAN) / VIDEO_STD
        lead, (h, w) = x.shape[:-3], x.shape[-3:-1]
        x = x.reshape(-1, h, w, 3).permute(0, 3, 1, 2)
        scale = self.SIZE / min(h, w)
        size = (max(self.SIZE, int(round(h * scale))), max(self.SIZE, int(round(w * scale))))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        top, left = (size[0] - self.SIZE) // 2, (size[1] - self.SIZE) // 2
        x = x[..., top:top + self.SIZE, left:left + self.SIZE].permute(0, 2, 3, 1)
        return x.reshape(*lead, self.SIZE, self.SIZE, 3).contiguous()

    def spectrogram(self, clip, start: float) -> np.ndarray:
        """(257, 99) z-normalised log filter bank of the second of audio from ``start``; like the reference, a
        window reaching past the end is moved back to end with the audio (zero-padded if the audio is shorter)."""
        rate = clip.sample_rate
        wav = np.clip(np.round(clip.audio * 32768.0), -32768, 32767)  # the reference reads 16-bit integers
        first = int(round(start * rate)) - clip.sample_start
        if first < 0:
            raise ValueError(f"window at {start}s starts before the decoded audio (sample {clip.sample_start})")
        first = max(0, min(first, len(wav) - rate))
        seg = np.zeros(rate, np.float64)
        part = wav[first:first + rate]
        seg[:len(part)] = part
        spec = log_fbank(seg, rate, self.fbank, n_fft=self.N_FFT).T
        return ((spec - SPEC_MEAN) / SPEC_STD).astype(np.float32)

    def embed(self, modality, x):
        if modality == "audio":
            return self.nets.audio(x.float())
        x = x.permute(0, 4, 1, 2, 3)  # (B, 3, T, H, W)
        if x.dtype == torch.uint8:
            x = (x.float() / 255.0 - VIDEO_MEAN) / VIDEO_STD
        return self.nets.video(x.float())


def reference_starts(duration: float) -> np.ndarray:
    """Window starts of the reference extraction: n = int(D) - 1 windows, window i at
    (D - 1) * i / (10 * (n // 10 + 1)) seconds (one window at 0 when n < 1)."""
    n = int(duration + 1e-6) - 1
    if n < 1:
        return np.zeros(1)
    return (duration - 1.0) * np.arange(n) / (10.0 * (n // 10 + 1))
