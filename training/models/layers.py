"""Building blocks shared by several models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingNet(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout, optionally with a hidden layer of the same kind first.

    As in the benchmark's reference code, ``momentum`` applies to the output BatchNorm only (the hidden one keeps
    PyTorch's default 0.1), and only when there is a hidden layer."""

    def __init__(self, d_in: int, d_out: int, hidden: int | None = None, dropout: float = 0.0,
                 momentum: float = 0.1, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden:
            layers += [nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(), nn.ReLU(),
                       nn.Dropout(dropout), nn.Linear(hidden, d_out),
                       nn.BatchNorm1d(d_out, momentum=momentum) if batch_norm else nn.Identity(), nn.ReLU(),
                       nn.Dropout(dropout)]
        else:
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out) if batch_norm else nn.Identity(), nn.ReLU(),
                       nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B, T, D): the same net on every step
            b, t, d = x.shape
            return self.net(x.reshape(b * t, d)).reshape(b, t, -1)
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention with separate head width (ViT style); masks: True = blocked."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        project = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2) for t in self.to_qkv(x).chunk(3, -1))
        attn_mask = None if mask is None else ~mask[:, None] if mask.dim() == 3 else ~mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNormTransformer(nn.Module):
    """``depth`` layers of x += Attn(LN(x)); x += FF(LN(x))."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(dim), Attention(dim, heads, dim_head, dropout), nn.LayerNorm(dim),
                           FeedForward(dim, mlp_dim, dropout)]) for _ in range(depth))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for ln1, attn, ln2, ff in self.layers:
            x = attn(ln1(x), mask) + x
            x = ff(ln2(x)) + x
        return x


class _Recorded(torch.autograd.Function):
    """y = x Wᵀ + b (``linear``) or y = x ⊙ γ + β whose backward hands the output gradient to ``record`` and computes
    the input gradient only: the weight gradient is left to the recorder (CSGM builds a modulated one from the
    recorded activations)."""

    @staticmethod
    def forward(ctx, x, weight, bias, record, linear):
        ctx.save_for_backward(weight)
        ctx.record, ctx.linear = record, linear
        return F.linear(x, weight, bias) if linear else torch.addcmul(bias, x, weight)

    @staticmethod
    def backward(ctx, d):
        ctx.record[1] = d
        (weight,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = d @ weight if ctx.linear else d * weight
        return grad_x, None, None, None, None


class RecordableLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) that, while ``recorder`` is set, gives its input and output
    gradient to the recorder instead of accumulating a weight gradient. ``recorder(x)`` returns the record
    ``[x, None, ...]`` whose slot 1 receives the output gradient."""

    recorder = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recorder is None or not torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        return _Recorded.apply(x, self.weight, self.bias, self.recorder(x), True)


class Affine(nn.Module):
    """The learnable per-channel scale and shift of a normalisation layer (recordable like
    :class:`RecordableLinear`)."""

    recorder = None

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.recorder is None or not torch.is_grad_enabled():
            return torch.addcmul(self.bias, x, self.weight)
        return _Recorded.apply(x, self.weight, self.bias, self.recorder(x), False)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the last (channel) axis that counts valid entries only, so padded sequence steps shift neither
    a batch's normalisation nor the running estimates evaluation uses. ``x``: (..., C), ``valid``: (...); without
    ``valid`` every entry counts (PyTorch's fused kernel)."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.affine = Affine(channels)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if valid is None:
            flat = x.reshape(-1, x.shape[-1])
            out = F.batch_norm(flat, self.running_mean, self.running_var, None, None, self.training, self.momentum,
                               self.eps)
            return self.affine(out.reshape(x.shape))
        if self.training:
            flat, w = x.reshape(-1, x.shape[-1]), valid.reshape(-1).to(x.dtype)
            n = w.sum().clamp(min=1)
            mean = (w @ flat) / n  # statistics of the valid steps, as matrix-vector products
            var = ((w @ (flat * flat)) / n - mean * mean).clamp(min=0)
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return self.affine((x - mean) / torch.sqrt(var + self.eps))


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On the CPU the keep mask is drawn from 15 random bits per element (keep probability exact to
    1/32768) instead of PyTorch's Bernoulli sampler, which costs more than the matrix products around it at the sizes
    DAAN's per-step layers see; on other devices (and in evaluation) it is ``F.dropout``."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not 0.0 < p < 1.0:
        return F.dropout(x, p, training)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:n].view(x.shape)
    keep = torch.bitwise_and(bits, 0x7FFF) >= round(p * 32768)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))
