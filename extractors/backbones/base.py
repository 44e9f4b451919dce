"""The backbone interface: a module + its preprocessing + its window length + its output dimensions.

``preprocess`` runs on the CPU inside decode workers and turns a decoded :class:`Clip` into a batch of
windows per modality; ``embed`` runs on the device on windows pooled from many videos. A new backbone is one
subclass registered with :func:`register`.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from extractors.media.decode import Clip

BACKBONES: dict[str, type[Backbone]] = {}


def register(cls: type[Backbone]) -> type[Backbone]:
    BACKBONES[cls.name] = cls
    return cls


def build_backbone(name: str, params: dict | None = None) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    cls = BACKBONES[name]
    params = dict(params or {})
    unknown = set(params) - set(cls.default_params)
    if unknown:
        raise ValueError(f"backbone {name!r}: unknown parameter(s) {sorted(unknown)}; "
                         f"known: {sorted(cls.default_params)}")
    return cls(**{**cls.default_params, **params})


class Backbone(nn.Module):
    name: ClassVar[str]
    default_params: ClassVar[dict] = {}

    # decoding contract, set by subclasses
    sample_rate: int
    video_fps: float
    video_short_side: int | None
    audio_step_seconds: float
    video_step_seconds: float
    audio_dim: int
    video_dim: int

    def __init__(self, **params):
        super().__init__()
        self.params = params

    def preprocess(self, clip: Clip) -> dict[str, torch.Tensor]:
        """``{"audio": (Ta, ...), "video": (Tv, ...)}``: one entry per window, CPU tensors."""
        raise NotImplementedError

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) windows of one modality -> (B, D) features."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"backbone": self.name, **self.params}


def window_starts(duration: float, window: float, hop: float | None = None) -> np.ndarray:
    """Start times of consecutive windows that fit in ``duration`` (at least one, padded if the clip is short)."""
    hop = hop or window
    n = 1 if duration <= window else int(math.floor((duration - window) / hop + 1e-6)) + 1
    return np.arange(n) * hop


def audio_windows(wav: np.ndarray, sample_rate: int, starts: np.ndarray, window: float) -> np.ndarray:
    """(T, window*sr) slices of ``wav``, zero-padded at the end."""
    size = int(round(window * sample_rate))
    out = np.zeros((len(starts), size), np.float32)
    for i, s in enumerate(starts):
        seg = wav[int(round(s * sample_rate)):][:size]
        out[i, :len(seg)] = seg
    return out


def frame_windows(frames: np.ndarray, fps: float, starts: np.ndarray, window: float, n_frames: int) -> np.ndarray:
    """(T, n_frames, H, W, 3): ``n_frames`` frames spread evenly over each window (last frame repeated if short)."""
    offsets = (np.arange(n_frames) + 0.5) * window / n_frames
    idx = np.floor((starts[:, None] + offsets[None, :]) * fps).astype(int)
    return frames[np.clip(idx, 0, len(frames) - 1)]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[-3:-1]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return frames[..., top:top + size, left:left + size, :]
