"""QDMA, DAAN's quality-discrepancy mitigation attention (DAAN §II.A, Eqs. 1-4), one per modality.

For a padded sequence x (B, T, d) with a validity mask:
    Eq. 1   o  = (S(Q1 K1ᵀ) − w · S(Q2 K2ᵀ)) V      Q_j = x^j W_Q, K_j = x^j W_K for the two feature halves x^j,
                                                   V = x W_V; all from the modality's own steps, never the text
    Eq. 2   o¹ = GroupNorm(o);  o² = Dropout(ReLU(BN((1 − w) · Linear(o¹))))   per step, BN over valid steps
    Eq. 3   y  = R(D(C(o¹)))   causal conv C, n causal convs D with dilation k, residual R
    Eq. 4   φ  = mean over valid steps of o² + y at the last valid step

Every learnable weight that CSGM modulates lives in an ``nn.Linear`` or an :class:`Affine` whose inputs are (B, T, ·)
tensors, so per-sample gradient contributions can be computed from activations alone (``training/models/csgm.py``).
Convolutions are therefore written as linear maps over stacked, shifted steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.models.layers import Affine, MaskedBatchNorm


class StepGroupNorm(nn.Module):
    """GroupNorm of every step's channel vector (groups = attention heads, as in differential attention)."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-5):
        super().__init__()
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups")
        self.groups, self.eps = groups, eps
        self.affine = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return self.affine(F.group_norm(x.reshape(b * t, c), self.groups, eps=self.eps).reshape(b, t, c))


class DiffAttention(nn.Module):
    """Eq. 1 over the steps of one modality, multi-head; padded keys get no attention."""

    def __init__(self, d_in: int, qk_dim: int, value_dim: int, heads: int, weight: float):
        super().__init__()
        if d_in % 2:
            raise ValueError(f"QDMA splits the features into two halves; the input dimension {d_in} is odd")
        if qk_dim % heads or value_dim % heads:
            raise ValueError(f"QDMA: qk_dim {qk_dim} and value_dim {value_dim} must be multiples of heads {heads}")
        self.heads, self.weight = heads, weight
        self.w_q = nn.Linear(d_in // 2, qk_dim, bias=False)  # shared by the two halves, as Eq. 1 writes one W_Q
        self.w_k = nn.Linear(d_in // 2, qk_dim, bias=False)
        self.w_v = nn.Linear(d_in, value_dim, bias=False)

    def maps(self, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two softmax maps S(Q1K1ᵀ), S(Q2K2ᵀ): (B, heads, T, T)."""
        b, t, _ = x.shape
        halves = torch.cat(x.chunk(2, dim=-1), dim=1)  # (B, 2T, d/2): one call of each projection for both halves
        q, k = self._heads(self.w_q(halves)), self._heads(self.w_k(halves))
        q1, q2, k1, k2 = q[:, :, :t], q[:, :, t:], k[:, :, :t], k[:, :, t:]
        scale = 1.0 / math.sqrt(q.shape[-1])
        blocked = ~valid[:, None, None, :]
        a1 = (q1 @ k1.transpose(-1, -2) * scale).masked_fill(blocked, float("-inf")).softmax(-1)
        a2 = (q2 @ k2.transpose(-1, -2) * scale).masked_fill(blocked, float("-inf")).softmax(-1)
        return a1, a2

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        a1, a2 = self.maps(x, valid)
        v = self._heads(self.w_v(x))
        o = (a1 - self.weight * a2) @ v  # (B, heads, T, dv)
        return o.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)


class Refinement(nn.Module):
    """Eq. 2: GroupNorm, then (1 − w)·Linear, BatchNorm, ReLU, Dropout, per step."""

    def __init__(self, d_in: int, d_out: int, groups: int, weight: float, dropout: float, momentum: float):
        super().__init__()
        self.norm = StepGroupNorm(d_in, groups)
        self.linear = nn.Linear(d_in, d_out)
        self.bn = MaskedBatchNorm(d_out, momentum)
        self.drop = nn.Dropout(dropout)
        self.scale = 1.0 - weight

    def forward(self, o: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o1 = self.norm(o)
        o2 = self.drop(F.relu(self.bn(self.scale * self.linear(o1), valid)))
        return o1, o2


class TemporalBypass(nn.Module):
    """Eq. 3: y = D(C(x)) + x with a causal convolution C (``causal_kernel`` steps, dilation 1; default = the
    dilation, so that the dilated stack's receptive field has no holes) and ``layers`` causal convolutions D
    (``kernel`` taps, dilation ``dilation``), ReLU between layers; the residual is projected when the channel counts
    differ. Receptive field: causal_kernel + layers · (kernel − 1) · dilation steps.

    ``forward`` returns y at the last valid step only and computes just the positions that step depends on;
    ``forward_all`` computes every step (reference for tests)."""

    def __init__(self, d_in: int, channels: int, layers: int, dilation: int, kernel: int = 2,
                 causal_kernel: int | None = None):
        super().__init__()
        if kernel < 2 or dilation < 1 or layers < 0:
            raise ValueError("TCN: kernel >= 2, dilation >= 1, layers >= 0")
        self.kernel, self.dilation, self.layers = kernel, dilation, layers
        self.causal_kernel = causal_kernel or dilation
        self.causal = nn.Linear(d_in * self.causal_kernel, channels)
        self.dilated = nn.ModuleList(nn.Linear(channels * kernel, channels) for _ in range(layers))
        self.residual = nn.Linear(d_in, channels, bias=False) if d_in != channels else None

    @property
    def receptive_field(self) -> int:
        return self.causal_kernel + self.layers * (self.kernel - 1) * self.dilation

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, d) and valid lengths -> (B, channels): y at step lengths-1."""
        last = (lengths - 1).clamp(min=0)
        span = self.layers * (self.kernel - 1)  # C outputs needed at last - m·dilation, m = 0..span
        m = torch.arange(span + 1, device=x.device)
        pos = last[:, None] - m[None, :] * self.dilation  # (B, M)
        taps = pos[:, :, None] - torch.arange(self.causal_kernel, device=x.device)[None, None, :]  # (B, M, kc)
        h = self.causal(_gather_steps(x, taps))  # (B, M, C)
        h = h * (pos >= 0).unsqueeze(-1).to(h.dtype)  # steps before the start are zero padding
        for layer in self.dilated:
            n_out = h.shape[1] - (self.kernel - 1)
            # output index m (step last - m·dilation) reads indices m .. m+kernel-1 (one dilation back each)
            stacked = torch.cat([F.relu(h[:, j:j + n_out]) for j in range(self.kernel)], dim=-1)
            h = layer(stacked) * (pos[:, :n_out] >= 0).unsqueeze(-1).to(h.dtype)
        x_last = x[torch.arange(x.shape[0], device=x.device), last]
        res = self.residual(x_last[:, None])[:, 0] if self.residual is not None else x_last
        return h[:, 0] + res

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """y at every step (causal: step t sees steps <= t only)."""
        b, t, _ = x.shape
        steps = torch.arange(t, device=x.device)
        taps = steps[None, :, None] - torch.arange(self.causal_kernel, device=x.device)[None, None, :]
        h = self.causal(_gather_steps(x, taps.expand(b, -1, -1)))
        for layer in self.dilated:
            h = F.relu(h)
            taps = steps[None, :, None] - self.dilation * torch.arange(self.kernel, device=x.device)[None, None, :]
            h = layer(_gather_steps(h, taps.expand(b, -1, -1)))
        return h + (self.residual(x) if self.residual is not None else x)


def _gather_steps(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """x (B, T, d), taps (B, M, K) step indices (negative = before the start: zeros) -> (B, M, K·d)."""
    b, m, k = taps.shape
    idx = taps.clamp(min=0).reshape(b, m * k)
    g = torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))
    g = g * (taps.reshape(b, m * k) >= 0).unsqueeze(-1).to(x.dtype)
    return g.reshape(b, m, k * x.shape[-1])


class QDMA(nn.Module):
    """Eqs. 1-4 for one modality: (B, T, d) sequence + padding mask -> φ (B, hidden)."""

    def __init__(self, d_in: int, hidden: int, qk_dim: int, value_dim: int | None, heads: int, weight: float,
                 tcn_layers: int, dilation: int, tcn_kernel: int, dropout: float, momentum: float):
        super().__init__()
        value_dim = value_dim or d_in
        self.attention = DiffAttention(d_in, qk_dim, value_dim, heads, weight)
        self.refine = Refinement(value_dim, hidden, heads, weight, dropout, momentum)
        self.tcn = TemporalBypass(value_dim, hidden, tcn_layers, dilation, tcn_kernel)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        valid = ~pad
        o = self.attention(x, valid)
        o1, o2 = self.refine(o, valid)
        lengths = valid.sum(1)
        w = valid.unsqueeze(-1).to(o2.dtype)
        pooled = (o2 * w).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(o2.dtype)
        return pooled + self.tcn(o1, lengths)

    def parts(self) -> dict[str, list[nn.Module]]:
        """The two parts CSGM modulates (p = 1: differential attention + refinement, p = 2: TCN)."""
        p1 = [self.attention.w_q, self.attention.w_k, self.attention.w_v, self.refine.norm.affine,
              self.refine.linear, self.refine.bn.affine]
        p2 = [self.tcn.causal, *self.tcn.dilated] + ([self.tcn.residual] if self.tcn.residual is not None else [])
        return {"attention": p1, "tcn": p2}
