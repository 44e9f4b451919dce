"""Loss functions shared by several models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """mean(max(||a-p|| - ||a-n|| + margin, 0)), Euclidean, as ``nn.TripletMarginLoss(margin, p=2)``."""
    d_pos = F.pairwise_distance(anchor, positive, p=2.0, eps=1e-6)
    d_neg = F.pairwise_distance(anchor, negative, p=2.0, eps=1e-6)
    return F.relu(d_pos - d_neg + margin).mean()


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a, b)
