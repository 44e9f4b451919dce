"""Bilinear compatibility models (ALE, SJE, DeViSE) adapted to audio-visual input, as in the AVCA benchmark.

The three share one model, F(x, y) = θ(x)ᵀ W φ(y) with θ(x) = [video mean; audio mean] and φ(y) the class text, and
differ only in how the margin violations of the other training classes are turned into a loss (``ranking_hinge``).
Equation map and decisions in docs/models/{ale,sje,devise}.md.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.models.base import InputDims, ZSLModel

REDUCTIONS = ("sum", "max", "weighted")
EVAL_DISTANCES = ("l2", "compatibility")


def margin_violations(scores: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """(B, C) hinge terms max(0, Δ + F(x, y') − F(x, y)) for every class y' ≠ y; 0 in the true class's column."""
    true_score = scores.gather(1, target[:, None])
    cost = F.relu(margin + scores - true_score)
    return cost.masked_fill(F.one_hot(target, scores.shape[1]).bool(), 0.0)


def rank_weights(ranks: torch.Tensor, n_classes: int) -> torch.Tensor:
    """ALE's weight of a sample whose true class is out-ranked (within the margin) by ``ranks`` classes:
    ℓ(r)/r with ℓ(r) = Σ_{k=1}^{r} 1/k, and 0 when r = 0 (no violation, nothing to weight)."""
    harmonic = torch.cat([torch.zeros(1, device=ranks.device),
                          torch.cumsum(1.0 / torch.arange(1, n_classes + 1, device=ranks.device), 0)])
    return harmonic[ranks] / ranks.clamp(min=1)


def ranking_hinge(scores: torch.Tensor, target: torch.Tensor, margin: float, reduction: str) -> torch.Tensor:
    """Structured hinge loss over the classes, averaged over the batch.

    ``sum`` (DeViSE): Σ_{y'} of all violations. ``max`` (SJE): the largest violation only. ``weighted`` (ALE): the
    sum of violations times the rank weight ℓ(r)/r, where r is the number of violating classes."""
    cost = margin_violations(scores, target, margin)
    if reduction == "sum":
        per_sample = cost.sum(1)
    elif reduction == "max":
        per_sample = cost.max(1).values
    elif reduction == "weighted":
        ranks = (cost > 0).sum(1)
        per_sample = rank_weights(ranks, scores.shape[1]) * cost.sum(1)
    else:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    return per_sample.mean()


class BilinearCompatibility(ZSLModel):
    """Linear map (no bias) of the concatenated audio-visual means into the text space, trained by a ranking loss
    on the dot-product compatibility with the text of every training class."""

    family = "ZSL"
    reduction: ClassVar[str]
    hparams = {
        "dropout": 0.2,  # --dropout_baselines: on the input features and on the class text, training only
        "norm_inputs": False,  # --norm_inputs: L2-normalise the concatenated features (cls features)
        "margin": 0.1,  # Δ of the hinge
        "eval_distance": "l2",  # "l2": cdist to the raw text (reference); "compatibility": −θ(x)ᵀWφ(y)
    }
    needs_negatives = False  # the other training classes are the negatives
    eval_modes = ("both",)
    primary_mode = "both"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        if hp["eval_distance"] not in EVAL_DISTANCES:
            raise ValueError(f"eval_distance must be one of {EVAL_DISTANCES}, got {hp['eval_distance']!r}")
        self.W = nn.Linear(dims.video + dims.audio, dims.text, bias=False)
        self.dropout = nn.Dropout(hp["dropout"])

    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        super().set_training_classes(class_ids, class_text)
        # global class id -> column of the training-class score matrix
        self.train_column = torch.full((int(class_ids.max()) + 1,), -1, dtype=torch.long, device=class_ids.device)
        self.train_column[class_ids] = torch.arange(len(class_ids), device=class_ids.device)

    def project(self, batch: Batch) -> torch.Tensor:
        """W θ(x): video and audio means concatenated (video first, as the reference), optionally normalised."""
        x = torch.cat([batch.video, batch.audio], dim=1)
        if self.hp["norm_inputs"]:
            x = F.normalize(x, dim=1)
        return self.W(self.dropout(x))

    def compatibility(self, batch: Batch) -> torch.Tensor:
        """(B, C_train) F(x, y) = (W θ(x))ᵀ φ(y) for every training class."""
        return self.project(batch) @ self.dropout(self.train_class_text).T

    def loss(self, batch: Batch):
        scores = self.compatibility(batch)
        target = self.train_column[batch.label]
        loss = ranking_hinge(scores, target, self.hp["margin"], self.reduction)
        return loss, {}

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"both": self.project(batch)}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"both": text}  # the raw class text: the model has no text-side parameters

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v, c = videos["both"], classes["both"]
        if self.hp["eval_distance"] == "compatibility":
            return {"both": -(v @ c.T)}
        # ||Wθ − φ||² = ||Wθ||² − 2 Wθᵀφ + ||φ||²: with unit-norm text the L2 ranking is the compatibility ranking
        return {"both": torch.cdist(v, c)}
