"""What every model offers the engine and the protocol.

A model trains from :class:`~training.data.batch.Batch` objects (features, the class text of each sample, and
negatives) and is evaluated from video features alone: ``distances`` receives no per-sample text, so no model can
peek at the label of the video it classifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from training.data.batch import Batch


@dataclass(frozen=True)
class InputDims:
    audio: int
    video: int
    text: int
    audio_step_seconds: float = 1.0  # time between consecutive sequence steps
    video_step_seconds: float = 1.0


class ZSLModel(nn.Module):
    name: ClassVar[str]
    display_name: ClassVar[str]
    family: ClassVar[str] = "Audio-visual"  # row group in the results table
    paper: ClassVar[str] = ""
    hparams: ClassVar[dict] = {}  # every hyper-parameter with its default
    needs_sequences: ClassVar[bool] = False
    needs_negatives: ClassVar[bool] = True
    eval_modes: ClassVar[tuple[str, ...]] = ("video",)
    primary_mode: ClassVar[str] = "video"
    calibrated_stacking: ClassVar[bool] = True

    def __init__(self, dims: InputDims, **hp):
        super().__init__()
        self.dims = dims
        self.hp = hp

    # ---- hooks the engine calls
    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        """Once the model is built for a dataset (before any checkpoint is loaded): the ids and text embeddings of the
        training classes, for losses over all training classes (cross-entropy, ranking against every seen class).
        Text only, no samples."""
        self.train_class_ids = class_ids
        self.train_class_text = class_text

    def prepare_evaluation(self, class_ids: list[int], class_text: torch.Tensor, seen: list[int],
                           unseen: list[int]) -> None:
        """Before an evaluation, in eval mode: the candidate classes of the split (ids, text; no samples).
        Generative models synthesise unseen-class features here; most models need nothing."""

    # ---- training
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)]

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss, parts = self.loss(batch)
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    # ---- evaluation (no per-sample text)
    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """(N, C) distance per evaluation mode; smaller is closer. Plain L2, as the benchmark's evaluation."""
        return {m: torch.cdist(videos[m], classes[m]) for m in self.eval_modes}
