"""AVMST: AVCA with a spiking-neuron gating branch (Li et al., ICME 2023). Equation map in docs/models/avmst.md."""

from __future__ import annotations

import torch
from torch import nn

from training.models import register
from training.models.avca import AVCA
from training.models.base import InputDims


class _SpikeSigmoidSurrogate(torch.autograd.Function):
    """Heaviside step H(x) = [x >= 0] forwards; backwards the derivative of sigmoid(αx), α·σ(αx)·(1-σ(αx)),
    stands in for the step's zero-almost-everywhere derivative (spikingjelly's default surrogate, α = 4)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * s * (1 - s), None


def spike(x: torch.Tensor, alpha: float = 4.0) -> torch.Tensor:
    return _SpikeSigmoidSurrogate.apply(x, alpha)


def integrate_and_fire(current: torch.Tensor, threshold: float = 1.0, alpha: float = 4.0) -> torch.Tensor:
    """Spike trains of integrate-and-fire neurons driven by ``current`` (T, ...), membranes starting at 0.

    Each step: v += I_t; s_t = H(v - threshold); hard reset v = v·(1 - s_t). The reset is not detached, so the
    surrogate gradient also flows through it (as spikingjelly's IFNode with detach_reset=False)."""
    v = torch.zeros_like(current[0])
    spikes = []
    for i_t in current:  # T steps of elementwise work (T = 10): the neuron state is sequential by nature
        v = v + i_t
        s = spike(v - threshold, alpha)
        v = v * (1 - s)
        spikes.append(s)
    return torch.stack(spikes)


class SpikingBranch(nn.Module):
    """Linear -> IF -> Linear -> IF, driven by the same input at every one of ``steps`` steps; returns the
    average spike rate (B, d_out), in [0, 1]."""

    def __init__(self, d_in: int, hidden: int, d_out: int, steps: int, threshold: float, alpha: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, d_out)
        self.steps, self.threshold, self.alpha = steps, threshold, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The input is constant over time, so fc1's current is computed once; fc2 runs on all steps at once.
        current = self.fc1(x).expand(self.steps, *x.shape[:-1], -1)
        s1 = integrate_and_fire(current, self.threshold, self.alpha)
        s2 = integrate_and_fire(self.fc2(s1), self.threshold, self.alpha)
        return s2.mean(0)


@register
class AVMST(AVCA):
    name = "avmst"
    display_name = "AVMST"
    family = "Audio-visual"
    paper = ("Li et al., Modality-fusion Spiking Transformer Network for Audio-visual Zero-shot Learning, "
             "ICME 2023")
    hparams = {
        **AVCA.hparams,
        "snn_hidden_dim": 512,
        "snn_steps": 10,  # T
        "snn_threshold": 1.0,
        "snn_surrogate_alpha": 4.0,
        "train_snn": True,  # False: keep the spiking layers at their random initialisation, as the public code does
    }

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        e = hp["embed_dim"]
        args = (hp["snn_hidden_dim"], e, hp["snn_steps"], hp["snn_threshold"], hp["snn_surrogate_alpha"])
        self.A_snn = SpikingBranch(dims.audio, *args)
        self.V_snn = SpikingBranch(dims.video, *args)
        if not hp["train_snn"]:
            for p in (*self.A_snn.parameters(), *self.V_snn.parameters()):
                p.requires_grad_(False)

    def gate(self, phi_a: torch.Tensor, phi_v: torch.Tensor, rate_a: torch.Tensor, rate_v: torch.Tensor):
        """Each modality's pair [φ, φ ⊙ softmax(rate)] (both tokens with that modality's position embedding)
        through the shared cross-attention; output token 0 is the new φ_a, token 1 the new φ_v (as in the public
        code). The two pairs are independent sequences, so they go through the transformer as one batch."""
        pairs = torch.cat([self._pair(phi_a, rate_a, self.pos[0]), self._pair(phi_v, rate_v, self.pos[1])])
        out = self.cross(pairs)
        b = phi_a.shape[0]
        return out[:b, 0], out[b:, 1]

    @staticmethod
    def _pair(phi: torch.Tensor, rate: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return torch.stack([phi + pos, phi * torch.softmax(rate, dim=-1) + pos], dim=1)

    def branches(self, audio: torch.Tensor, video: torch.Tensor):
        phi_a, phi_v = self.gate(self.A_enc(audio), self.V_enc(video), self.A_snn(audio), self.V_snn(video))
        # from here on AVCA's Eqs. 1-2 on the gated features
        att = self.cross(torch.stack([phi_a + self.pos[0], phi_v + self.pos[1]], dim=1))
        theta_a = self.A_proj(phi_a + att[:, 0])
        theta_v = self.V_proj(phi_v + att[:, 1])
        return phi_a, phi_v, theta_a, theta_v
