"""One batch of model inputs (a module of its own: the models and the feature bank both need it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Batch:
    """Inputs of one batch. ``*_pad`` is True at padded steps. ``text`` is the class text of ``label``:
    models may use it in training losses only; evaluation never passes it."""

    audio: torch.Tensor
    video: torch.Tensor
    label: torch.Tensor
    text: torch.Tensor | None = None
    audio_seq: torch.Tensor | None = None
    audio_pad: torch.Tensor | None = None
    video_seq: torch.Tensor | None = None
    video_pad: torch.Tensor | None = None
    neg: Batch | None = None

    @property
    def size(self) -> int:
        return self.audio.shape[0]

    def without_text(self) -> Batch:
        return replace(self, text=None, neg=None)
