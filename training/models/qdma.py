"""QDMA, DAAN's quality-discrepancy mitigation attention (DAAN §II.A, Eqs. 1-4), one per modality.

For a padded sequence x (B, T, d) with a validity mask:
    Eq. 1   o  = (S(Q1 K1ᵀ) − w · S(Q2 K2ᵀ)) V      Q_j = x^j W_Q, K_j = c^j W_K for the two feature halves,
                                                   V = c W_V; c = x (self-attention, default) or the other
                                                   modality's steps (cross-modal option); never the text
    Eq. 2   o¹ = GroupNorm(o);  o² = Dropout(ReLU(BN((1 − w) · Linear(o¹))))   per step, BN over valid steps
    Eq. 3   y  = R(D(C(o¹)))   causal conv C, n causal convs D with dilation k, residual R
    Eq. 4   φ  = mean over valid steps of o² + y at the last valid step

Every learnable weight that CSGM modulates lives in a :class:`RecordableLinear` or an :class:`Affine`, so per-sample
gradient contributions can be computed from activations alone (``training/models/csgm.py``).
Convolutions are therefore written as linear maps over stacked, shifted steps.

Speed: everything after the attention runs on the packed valid steps (N, C) of the batch, not on the padded
(B, T, C) tensor, so padding costs neither memory traffic nor arithmetic and the masked BatchNorm becomes a plain,
fused one. CSGM learns which sequence each packed row belongs to from :func:`training.models.csgm.packed_rows`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.models.csgm import PackedRows, packed_rows
from training.models.layers import Affine, MaskedBatchNorm, RecordableLinear, fast_dropout


class StepGroupNorm(nn.Module):
    """GroupNorm of every step's channel vector (groups = attention heads, as in differential attention)."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-5):
        super().__init__()
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels do not split into {groups} groups")
        self.groups, self.eps = groups, eps
        self.affine = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C). The trailing singleton axis selects PyTorch's fast (N, C, L) kernels (5x faster on CPU)."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1], 1)
        return self.affine(F.group_norm(flat, self.groups, eps=self.eps).reshape(shape))


class DiffAttention(nn.Module):
    """Eq. 1, multi-head: queries from the steps of x, keys and values from the steps of a context sequence (x itself
    for self-attention, the other modality for cross-modal attention); padded keys get no attention."""

    def __init__(self, d_in: int, qk_dim: int, value_dim: int, heads: int, weight: float, d_context: int | None = None,
                 learnable_weight: bool = False):
        super().__init__()
        d_context = d_context or d_in
        if d_in % 2 or d_context % 2:
            raise ValueError(f"QDMA splits the features into two halves; the input dimension {d_in} or "
                             f"{d_context} is odd")
        if qk_dim % heads or value_dim % heads:
            raise ValueError(f"QDMA: qk_dim {qk_dim} and value_dim {value_dim} must be multiples of heads {heads}")
        self.heads = heads
        # the subtraction weight: a fixed hyper-parameter, or learnt from ``weight`` as the Differential
        # Transformer's λ (not modulated by CSGM: it is no linear map)
        self.weight = nn.Parameter(torch.tensor(float(weight))) if learnable_weight else weight
        self.w_q = RecordableLinear(d_in // 2, qk_dim, bias=False)  # shared by the two halves, as Eq. 1 writes one W_Q
        self.w_k = RecordableLinear(d_context // 2, qk_dim, bias=False)
        self.w_v = RecordableLinear(d_context, value_dim, bias=False)

    def maps(self, x: torch.Tensor, valid: torch.Tensor, context: torch.Tensor | None = None,
             context_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two softmax maps S(Q1K1ᵀ), S(Q2K2ᵀ): (B, heads, T, T_context)."""
        ctx, ctx_valid = (x, valid) if context is None else (context, context_valid)
        b, t, d = x.shape
        tc, dc = ctx.shape[1], ctx.shape[2]
        # row 2s + j = half j of step s: one call of each projection, no copy
        q = self.w_q(x.reshape(b, 2 * t, d // 2)).view(b, t, 2, -1)
        k = self.w_k(ctx.reshape(b, 2 * tc, dc // 2)).view(b, tc, 2, -1)
        q1, q2, k1, k2 = (self._heads(z[:, :, j]) for z in (q, k) for j in (0, 1))
        scale = 1.0 / math.sqrt(q1.shape[-1])
        blocked = ~ctx_valid[:, None, None, :]
        a1 = (q1 @ k1.transpose(-1, -2) * scale).masked_fill(blocked, float("-inf")).softmax(-1)
        a2 = (q2 @ k2.transpose(-1, -2) * scale).masked_fill(blocked, float("-inf")).softmax(-1)
        return a1, a2

    def forward(self, x: torch.Tensor, valid: torch.Tensor, context: torch.Tensor | None = None,
                context_valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d) -> (B, T, value_dim)."""
        o = self.per_head(x, valid, context, context_valid)
        return o.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)

    def per_head(self, x: torch.Tensor, valid: torch.Tensor, context: torch.Tensor | None = None,
                 context_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 1 per head: (B, heads, T, value_dim / heads)."""
        a1, a2 = self.maps(x, valid, context, context_valid)
        return (a1 - self.weight * a2) @ self._heads(self.w_v(x if context is None else context))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return x.reshape(b, t, self.heads, c // self.heads).transpose(1, 2)


class Refinement(nn.Module):
    """Eq. 2: GroupNorm, then (1 − w)·Linear, BatchNorm, ReLU, Dropout, per step. Called on the packed valid steps
    (N, C), so the BatchNorm statistics are those of the valid steps."""

    def __init__(self, d_in: int, d_out: int, groups: int, weight: float, dropout: float, momentum: float):
        super().__init__()
        self.norm = StepGroupNorm(d_in, groups)
        self.linear = RecordableLinear(d_in, d_out)
        self.bn = MaskedBatchNorm(d_out, momentum)
        self.dropout = dropout
        self.scale = 1.0 - weight

    def forward(self, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o1 = self.norm(o)
        o2 = fast_dropout(F.relu(self.bn(self.scale * self.linear(o1))), self.dropout, self.training)
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
        self.causal = RecordableLinear(d_in * self.causal_kernel, channels)
        self.dilated = nn.ModuleList(RecordableLinear(channels * kernel, channels) for _ in range(layers))
        self.residual = RecordableLinear(d_in, channels, bias=False) if d_in != channels else None

    @property
    def receptive_field(self) -> int:
        return self.causal_kernel + self.layers * (self.kernel - 1) * self.dilation

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, d) and valid lengths -> (B, channels): y at step lengths-1."""
        b, t, d = x.shape
        return self.last_step(x.reshape(b * t, d), torch.arange(b, device=x.device) * t, lengths)

    def last_step(self, tokens: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Packed steps (N, d), where sequence b's steps are rows offsets[b] .. offsets[b] + lengths[b] - 1
        -> (B, channels): y at each sequence's last valid step."""
        last = (lengths - 1).clamp(min=0)
        span = self.layers * (self.kernel - 1)  # C outputs needed at last - m·dilation, m = 0..span
        m = torch.arange(span + 1, device=tokens.device)
        pos = last[:, None] - m[None, :] * self.dilation  # (B, M)
        taps = pos[:, :, None] - torch.arange(self.causal_kernel, device=tokens.device)[None, None, :]  # (B, M, kc)
        h = self.causal(_gather_steps(tokens, offsets, taps))  # (B, M, C)
        h = h * (pos >= 0).unsqueeze(-1).to(h.dtype)  # steps before the start are zero padding
        for layer in self.dilated:
            n_out = h.shape[1] - (self.kernel - 1)
            # output index m (step last - m·dilation) reads indices m .. m+kernel-1 (one dilation back each)
            stacked = torch.cat([F.relu(h[:, j:j + n_out]) for j in range(self.kernel)], dim=-1)
            h = layer(stacked) * (pos[:, :n_out] >= 0).unsqueeze(-1).to(h.dtype)
        x_last = tokens[offsets + last]
        res = self.residual(x_last[:, None])[:, 0] if self.residual is not None else x_last
        return h[:, 0] + res

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """y at every step (causal: step t sees steps <= t only)."""
        b, t, _ = x.shape
        steps = torch.arange(t, device=x.device)
        offsets = torch.arange(b, device=x.device) * t
        taps = steps[None, :, None] - torch.arange(self.causal_kernel, device=x.device)[None, None, :]
        h = self.causal(_gather_steps(x.reshape(b * t, -1), offsets, taps.expand(b, -1, -1)))
        for layer in self.dilated:
            h = F.relu(h)
            taps = steps[None, :, None] - self.dilation * torch.arange(self.kernel, device=x.device)[None, None, :]
            h = layer(_gather_steps(h.reshape(b * t, -1), offsets, taps.expand(b, -1, -1)))
        return h + (self.residual(x) if self.residual is not None else x)


def _gather_steps(tokens: torch.Tensor, offsets: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Packed steps (N, d), each sequence's first row (B,), taps (B, M, K) step indices (negative = before the start:
    zeros) -> (B, M, K·d)."""
    b, m, k = taps.shape
    g = tokens[(offsets[:, None, None] + taps.clamp(min=0)).reshape(-1)]
    return g.masked_fill_((taps.reshape(-1) < 0).unsqueeze(-1), 0.0).reshape(b, m, -1)


class QDMA(nn.Module):
    """Eqs. 1-4 for one modality: (B, T, d) sequence + padding mask -> φ (B, hidden)."""

    def __init__(self, d_in: int, hidden: int, qk_dim: int, value_dim: int | None, heads: int, weight: float,
                 tcn_layers: int, dilation: int, tcn_kernel: int, dropout: float, momentum: float,
                 d_context: int | None = None, learnable_weight: bool = False):
        super().__init__()
        value_dim = value_dim or d_in
        self.attention = DiffAttention(d_in, qk_dim, value_dim, heads, weight, d_context, learnable_weight)
        self.refine = Refinement(value_dim, hidden, heads, weight, dropout, momentum)
        self.tcn = TemporalBypass(value_dim, hidden, tcn_layers, dilation, tcn_kernel)

    def forward(self, x: torch.Tensor, pad: torch.Tensor, context: torch.Tensor | None = None,
                context_pad: torch.Tensor | None = None) -> torch.Tensor:
        """``context``: the other modality's steps for cross-modal attention (queries from x, keys and values from
        the context); None: self-attention over x."""
        valid = ~pad
        b, t, _ = x.shape
        seq, step = valid.nonzero(as_tuple=True)  # the valid steps, sequence by sequence, in time order
        lengths = valid.sum(1)
        ctx_valid = None if context is None else ~context_pad
        tokens = self.attention.per_head(x, valid, context, ctx_valid)[seq, :, step].flatten(1)  # (N, value_dim)
        with packed_rows(PackedRows(seq, step, b, t)):
            o1, o2 = self.refine(tokens)
        pooled = o2.new_zeros(b, o2.shape[1]).index_add(0, seq, o2)
        pooled = pooled / lengths.clamp(min=1).unsqueeze(-1).to(o2.dtype)
        return pooled + self.tcn.last_step(o1, lengths.cumsum(0) - lengths, lengths)

    def parts(self) -> dict[str, list[nn.Module]]:
        """The two parts CSGM modulates (p = 1: differential attention + refinement, p = 2: TCN)."""
        p1 = [self.attention.w_q, self.attention.w_k, self.attention.w_v, self.refine.norm.affine,
              self.refine.linear, self.refine.bn.affine]
        p2 = [self.tcn.causal, *self.tcn.dilated] + ([self.tcn.residual] if self.tcn.residual is not None else [])
        return {"attention": p1, "tcn": p2}
