"""A weight-free per-second backbone, so that the whole pipeline runs offline.

Audio (128-d per window): log-mel band statistics (mean, standard deviation and mean absolute temporal change
of each of 40 bands) plus 8 global descriptors (loudness mean/std, spectral centroid mean/std, spectral
flatness, onset strength, and the share of the loudness envelope's modulation energy at 1-4 Hz and 4-12 Hz).

Video (96-d per window): colour (RGB mean/std, saturation-weighted 12-bin hue histogram, mean saturation and
value, 3x3 grid of mean colours), motion (frame-difference energy, its 3x3 grid and temporal variation,
normal-flow direction), texture (8-bin gradient-orientation histogram, gradient magnitude), brightness
flicker, and hue histograms of the moving and of the foreground pixels.

Everything is computed with tensor operations on batches of windows, on whatever device extraction uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from extractors.backbones.base import (
    Backbone,
    InputFormat,
    ModalitySpec,
    audio_windows,
    center_crop,
    frame_windows,
    register,
)
from extractors.media.decode import Clip
from extractors.params import choice, integer, number

EPS = 1e-6


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """(n_mels, n_fft//2+1) triangular filters on the HTK mel scale."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return torch.tensor(np.maximum(0, np.minimum(up, down)), dtype=torch.float32)


@register
class Handcrafted(Backbone):
    name = "handcrafted"
    # n_mels is fixed by the audio dimension: 3 statistics per mel band and 8 more make 128
    declared_params = {"window_seconds": number(1.0, above=0), "sample_rate": integer(16000, minimum=1000),
                       "n_mels": choice(40, (40,)), "frames_per_window": integer(8, minimum=1),
                       "frame_size": integer(64, minimum=1), "hop_seconds": number(None, above=0)}
    AUDIO_DIM = 128
    VIDEO_DIM = 96

    def __init__(self, window_seconds: float, sample_rate: int, n_mels: int, frames_per_window: int,
                 frame_size: int, hop_seconds: float | None = None):
        super().__init__(window_seconds=window_seconds, sample_rate=sample_rate, n_mels=n_mels,
                         frames_per_window=frames_per_window, frame_size=frame_size, hop_seconds=hop_seconds)
        hop = hop_seconds or window_seconds
        if 3 * n_mels + 8 != self.AUDIO_DIM:
            raise ValueError(f"handcrafted: n_mels must be {(self.AUDIO_DIM - 8) // 3}")
        self.window = window_seconds
        self.frames_per_window = frames_per_window
        self.frame_size = frame_size
        self.modalities = ("audio", "video")
        self.specs = {"audio": ModalitySpec(window_seconds, hop, self.AUDIO_DIM),
                      "video": ModalitySpec(window_seconds, hop, self.VIDEO_DIM)}
        self.input_format = InputFormat(fps=frames_per_window / window_seconds, short_side=frame_size,
                                        sample_rate=sample_rate, channels="downmix")
        self.n_fft = 512
        self.hop = max(1, sample_rate // 100)
        self.register_buffer("stft_window", torch.hann_window(int(0.025 * sample_rate)), persistent=False)
        self.register_buffer("mel", mel_filterbank(self.n_fft, sample_rate, n_mels, 60.0,
                                                   min(7600.0, sample_rate / 2 - 100)), persistent=False)
        freqs = torch.linspace(0, sample_rate / 2, self.n_fft // 2 + 1)
        self.register_buffer("freqs", freqs / (sample_rate / 2), persistent=False)

    # ---------------------------------------------------------------- preprocessing (CPU, decode workers)
    def window_data(self, clip: Clip, modality: str, starts: np.ndarray) -> torch.Tensor:
        if modality == "audio":
            return torch.from_numpy(audio_windows(clip.audio, clip.sample_rate, starts, self.window, clip.sample_start))
        frames = frame_windows(clip.frames, clip.fps, starts, self.window, self.frames_per_window, clip.frame_start)
        frames = center_crop(frames, self.frame_size)
        if frames.shape[-3:-1] != (self.frame_size, self.frame_size):
            frames = _pad_to(frames, self.frame_size)
        return torch.from_numpy(np.ascontiguousarray(frames))

    # ---------------------------------------------------------------- features (device, batched)
    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self._audio(x) if modality == "audio" else self._video(x)

    def _audio(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.float()
        spec = torch.stft(wav, self.n_fft, hop_length=self.hop, win_length=self.stft_window.numel(),
                          window=self.stft_window, center=True, return_complex=True).abs() ** 2  # (B, K, F)
        logmel = torch.log(torch.einsum("mk,bkf->bmf", self.mel, spec) + EPS)
        band_mean, band_std = logmel.mean(-1), logmel.std(-1)
        band_delta = (logmel[..., 1:] - logmel[..., :-1]).abs().mean(-1)
        energy = spec.sum(1) + EPS  # (B, F)
        loud = torch.log(energy)
        centroid = (spec * self.freqs[None, :, None]).sum(1) / energy
        flatness = torch.exp(torch.log(spec + EPS).mean(1)) / (spec.mean(1) + EPS)
        onset = F.relu(loud[:, 1:] - loud[:, :-1]).mean(-1)
        env = loud - loud.mean(-1, keepdim=True)
        mod = torch.fft.rfft(env, dim=-1).abs() ** 2
        mod_freqs = torch.fft.rfftfreq(env.shape[-1], d=self.hop / self.sample_rate).to(wav.device)
        total = mod[:, 1:].sum(-1) + EPS
        slow = mod[:, (mod_freqs >= 1) & (mod_freqs < 4)].sum(-1) / total
        fast = mod[:, (mod_freqs >= 4) & (mod_freqs < 12)].sum(-1) / total
        globals_ = torch.stack([loud.mean(-1), loud.std(-1), centroid.mean(-1), centroid.std(-1),
                                flatness.mean(-1), onset, slow, fast], dim=-1)
        return torch.cat([band_mean, band_std, band_delta, globals_], dim=-1)

    def _video(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 255.0  # (B, T, H, W, 3)
        b, t = x.shape[:2]
        rgb_mean, rgb_std = x.mean((1, 2, 3)), x.std((1, 2, 3))
        hue, sat, val = _hsv(x)
        colourfulness = sat * val
        hue_hist = _soft_hist(hue, colourfulness, 12)
        grid = _grid_mean(x.permute(0, 1, 4, 2, 3).reshape(b, t * 3, *x.shape[2:4]), 3)  # (B, T*3, 9)
        grid = grid.reshape(b, t, 3, 9).mean(1).reshape(b, 27)
        gray = x.mean(-1)  # (B, T, H, W)
        diff = (gray[:, 1:] - gray[:, :-1]).abs()
        motion = diff.mean((1, 2, 3))
        motion_var = diff.mean((2, 3)).std(1)
        motion_grid = _grid_mean(diff, 3).mean(1)  # (B, 9)
        gy, gx = _gradients(gray)
        it = gray[:, 1:] - gray[:, :-1]
        gxm, gym = gx[:, :-1], gy[:, :-1]
        norm = (gxm ** 2 + gym ** 2).mean((1, 2, 3)) + EPS
        flow_x, flow_y = -(it * gxm).mean((1, 2, 3)) / norm, -(it * gym).mean((1, 2, 3)) / norm
        flow_ax = (it * gxm).abs().mean((1, 2, 3)) / norm
        flow_ay = (it * gym).abs().mean((1, 2, 3)) / norm
        mag = torch.sqrt(gx ** 2 + gy ** 2 + EPS)
        orient = torch.remainder(torch.atan2(gy, gx), math.pi) / math.pi  # unsigned, in [0, 1)
        orient_hist = _soft_hist(orient, mag, 8)
        flicker = gray.mean((2, 3)).std(1)
        moving = torch.cat([diff, diff[:, -1:]], 1)
        moving_hue = _soft_hist(hue, colourfulness * moving, 12)
        median = x.flatten(2, 3).median(dim=2).values[:, :, None, None, :]
        foreground = ((x - median).abs().sum(-1) > 0.25).float()
        fg_hue = _soft_hist(hue, colourfulness * foreground, 12)
        out = torch.cat([rgb_mean, rgb_std, hue_hist, sat.mean((1, 2, 3))[:, None], val.mean((1, 2, 3))[:, None],
                         grid, motion[:, None], motion_var[:, None], motion_grid,
                         torch.stack([flow_x, flow_y, flow_ax, flow_ay], -1), orient_hist, mag.mean((1, 2, 3))[:, None],
                         flicker[:, None], moving_hue, fg_hue], dim=-1)
        return out


def _hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, g, b = x.unbind(-1)
    maxc, minc = x.max(-1).values, x.min(-1).values
    delta = maxc - minc
    sat = delta / (maxc + EPS)
    safe = delta + EPS
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return (h / 6.0) % 1.0, sat, maxc


def _soft_hist(values: torch.Tensor, weights: torch.Tensor, bins: int) -> torch.Tensor:
    """Circular soft histogram of values in [0,1) with linear interpolation between bin centres, normalised."""
    b = values.shape[0]
    pos = values.reshape(b, -1) * bins - 0.5
    lo = torch.floor(pos)
    frac = pos - lo
    w = weights.reshape(b, -1)
    hist = torch.zeros(b, bins, device=values.device, dtype=values.dtype)
    hist.scatter_add_(1, (lo.long() % bins), w * (1 - frac))
    hist.scatter_add_(1, ((lo.long() + 1) % bins), w * frac)
    return hist / (hist.sum(1, keepdim=True) + EPS)


def _grid_mean(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, n*n) mean over an n x n grid of cells."""
    return F.adaptive_avg_pool2d(x, n).flatten(2)


def _gradients(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gy = torch.zeros_like(gray)
    gx = torch.zeros_like(gray)
    gy[..., 1:-1, :] = (gray[..., 2:, :] - gray[..., :-2, :]) / 2
    gx[..., :, 1:-1] = (gray[..., :, 2:] - gray[..., :, :-2]) / 2
    return gy, gx


def _pad_to(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[-3:-1]
    pad = [(0, 0)] * (frames.ndim - 3) + [(0, max(0, size - h)), (0, max(0, size - w)), (0, 0)]
    return np.pad(frames, pad, mode="edge")[..., :size, :size, :]
