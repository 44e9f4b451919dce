"""Hyper-alignment: AVCA plus a hyperbolic alignment loss on the encoder outputs (Hong et al., ICCV 2023).
Equation map in docs/models/hyperalignment.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.batch import Batch
from training.models import register
from training.models.avca import AVCA
from training.models.base import InputDims

# ---------------------------------------------------------------------------------------- Poincaré ball, curvature -c
_NORM_MIN = 1e-5  # floor on norms before dividing by them
_ARTANH_MAX = 1 - 1e-5  # artanh(±1) is infinite


def _norm(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=-1, keepdim=True).clamp_min(_NORM_MIN)


def _boundary_eps(dtype: torch.dtype) -> float:
    """Distance kept from the boundary of the ball, relative to its radius: float32 cannot tell 1 - 1e-5 from 1
    after the artanh, so single precision stays further inside."""
    return 1e-3 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-5


def expmap0(u: torch.Tensor, c: float) -> torch.Tensor:
    """Tangent vector at the origin -> point of the ball: tanh(√c‖u‖) u / (√c‖u‖)."""
    sqrt_c = c ** 0.5
    n = _norm(u)
    return torch.tanh(sqrt_c * n) * u / (sqrt_c * n)


def logmap0(y: torch.Tensor, c: float) -> torch.Tensor:
    """Point of the ball -> tangent vector at the origin: artanh(√c‖y‖) y / (√c‖y‖); the inverse of expmap0."""
    sqrt_c = c ** 0.5
    n = _norm(y)
    return torch.atanh((sqrt_c * n).clamp(max=_ARTANH_MAX)) * y / (sqrt_c * n)


def project(x: torch.Tensor, c: float) -> torch.Tensor:
    """Pull points outside the ball (radius 1/√c) back inside along their direction; points inside are kept."""
    max_norm = (1 - _boundary_eps(x.dtype)) / c ** 0.5
    n = _norm(x)
    return torch.where(n > max_norm, x / n * max_norm, x)


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """(B, B) cosine similarities between the rows of ``x``."""
    u = x / _norm(x)
    return u @ u.T


def hyperbolic_alignment(phi_v: torch.Tensor, phi_a: torch.Tensor, c: float) -> torch.Tensor:
    """MSE between the within-batch cosine-similarity matrices of the two modalities, each taken in the tangent
    space at the origin after projecting the embeddings onto the ball: logmap0(project(φ))."""
    hv, ha = logmap0(project(phi_v, c), c), logmap0(project(phi_a, c), c)
    return F.mse_loss(cosine_matrix(hv), cosine_matrix(ha))


@register
class HyperAlignment(AVCA):
    name = "hyperalignment"
    display_name = "Hyper-alignment"
    family = "Audio-visual"
    paper = ("Hong et al., Hyperbolic Audio-visual Zero-shot Learning, ICCV 2023 "
             "(its 'Hyper-alignment' framework on AVCA)")
    hparams = {
        **AVCA.hparams,
        "curvature": 0.01,  # c: the ball has curvature -c and radius 1/sqrt(c)
        "align_weight": 1e-3,  # weight of the alignment loss in the total
    }

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        if hp["curvature"] <= 0:
            raise ValueError(f"curvature must be positive, got {hp['curvature']}")
        self._encoded: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def branches(self, audio: torch.Tensor, video: torch.Tensor):
        out = super().branches(audio, video)
        if self._encoded is not None:  # inside loss(): keep φ_a, φ_v of the positive and the negative batch
            self._encoded.append((out[0], out[1]))
        return out

    def loss(self, batch: Batch):
        self._encoded = []
        try:
            total, parts = super().loss(batch)  # AVCA's objective; runs branches() on positives and negatives
            encoded = self._encoded
        finally:
            self._encoded = None
        c = self.hp["curvature"]
        parts["align"] = self.hp["align_weight"] * sum(hyperbolic_alignment(phi_v, phi_a, c)
                                                       for phi_a, phi_v in encoded)
        return total + parts["align"], parts
