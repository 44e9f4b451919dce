"""DAAN: discrepancy-aware attention network (Yu et al., arXiv 2412.11715), and the ablation variants of its
Table II. Equation-to-code map and every decision: docs/models/daan.md.

    φ_m  = QDMA_m(sequence of modality m)                  (Eqs. 1-4; Base: an MLP on the mean feature)
    φ'_a, φ'_v = CrossModal(φ_a, φ_v)                      (§II.A, last paragraph)
    θ_m  = m_proj(φ'_m), θ_w = W_proj(w)                   (§II.B, first paragraph)
    L    = L_t + L_c + L_r                                 (Eqs. 9-12)
    CSGM modulates the gradients of each QDMA part         (Eqs. 5-8; training/models/csgm.py)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from training.data.batch import Batch
from training.losses import mse, triplet
from training.models import register
from training.models.base import InputDims, ZSLModel
from training.models.csgm import GhostGrads, convergence_rates, csgm_statistics, modulate, scale_steps
from training.models.layers import EmbeddingNet, FeedForward
from training.models.qdma import QDMA


class CrossModal(nn.Module):
    """Multi-head attention between the audio and the visual token, a feed-forward block, each merged with its input
    through a residual connection and layer normalisation (post-norm, as DAAN describes it)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.modality = nn.Parameter(torch.randn(2, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = FeedForward(dim, mlp_dim, dropout)

    def forward(self, phi_a: torch.Tensor, phi_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([phi_a, phi_v], dim=1) + self.modality
        x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
        x = self.norm2(x + self.ff(x))
        return x[:, 0], x[:, 1]



CSGM_RANGE = "csgm.modulate"

@register
class DAAN(ZSLModel):
    name = "daan"
    display_name = "DAAN"
    family = "Audio-visual"
    paper = "Yu et al., DAAN: Discrepancy-Aware Attention Network for Enhanced Audio-Visual Zero-Shot Learning, 2024"
    needs_sequences = True
    eval_modes = ("video",)
    primary_mode = "video"
    use_qdma: ClassVar[bool] = True
    csgm: ClassVar[str] = "full"  # "full" (V_c · V_o), "convergence" (V_c only) or "none"
    hparams = {
        "hidden_dim": 512,  # "hidden" of §III.A
        "out_dim": 300,  # "output": the joint space of θ_a, θ_v, θ_w
        "diff_weight": 1.15,  # w: the subtraction weight of Eq. 1 (and the (1 − w) of Eq. 2)
        "gamma": 0.45,  # γ: lower bound of the contribution rate (Eq. 5)
        "dilation": 3,  # k
        "tcn_layers": 2,  # n
        "tcn_kernel": 2,
        "qdma_heads": 4,
        "qk_dim": 128,
        "value_dim": 0,  # 0: the input dimension (f_r maps input -> hidden)
        "qdma_dropout": 0.2,
        "mlp_hidden": 512,  # Base only: the MLP that stands in for QDMA
        "attn_heads": 4,
        "attn_mlp_dim": 512,
        "attn_dropout": 0.2,
        "proj_dropout": 0.3,
        "dec_dropout": 0.5,
        "momentum": 0.1,
        "margin": 1.0,
        "noise": 1.0,  # scale of CSGM's Gaussian term (0 disables it)
        "w_owner": "csgm",  # what the paper's w sets: CSGM's ρ ("csgm"; Eq. 1's weight learnt) or Eq. 1's ("attention")
        "lambda_init": 0.2,  # w_owner "csgm": Eq. 1's weight is learnt from this start (Differential Transformer, l=1)
        "qdma_attention": "self",  # QDMA's keys and values from the modality's own steps, or the other's ("cross")
        "csgm_normalise": "joint",  # δ and V_o normalised over both modalities ("joint") or each alone ("modality")
        "csgm_update": "scale_step",  # η scales each QDMA part's step ("scale_step") or only its gradient
        # (0, 1]: the learning rate of the QDMA parts CSGM modulates, relative to lr (a control: CSGM as a constant
        # step factor, e.g. the mean η measured in a DAAN run; docs/models/daan.md)
        "qdma_lr_scale": 1.0,
    }

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        h, o = hp["hidden_dim"], hp["out_dim"]
        if hp["qdma_attention"] not in ("self", "cross"):
            raise ValueError(f"qdma_attention must be 'self' or 'cross', got {hp['qdma_attention']!r}")
        self.cross_modal_qdma = hp["qdma_attention"] == "cross"
        if hp["w_owner"] not in ("attention", "csgm"):
            raise ValueError(f"w_owner must be 'attention' or 'csgm', got {hp['w_owner']!r}")
        w_is_rho = hp["w_owner"] == "csgm"
        self.rho = hp["diff_weight"] if w_is_rho else None
        if self.use_qdma:
            def qdma(d_in, d_other):
                return QDMA(d_in, h, hp["qk_dim"], hp["value_dim"] or None, hp["qdma_heads"],
                            hp["lambda_init"] if w_is_rho else hp["diff_weight"],
                            hp["tcn_layers"], hp["dilation"], hp["tcn_kernel"], hp["qdma_dropout"], hp["momentum"],
                            d_context=d_other if self.cross_modal_qdma else None, learnable_weight=w_is_rho)
            self.enc_a, self.enc_v = qdma(dims.audio, dims.video), qdma(dims.video, dims.audio)
        else:
            self.enc_a = EmbeddingNet(dims.audio, h, hp["mlp_hidden"], hp["qdma_dropout"], hp["momentum"])
            self.enc_v = EmbeddingNet(dims.video, h, hp["mlp_hidden"], hp["qdma_dropout"], hp["momentum"])
        self.cross = CrossModal(h, hp["attn_heads"], hp["attn_mlp_dim"], hp["attn_dropout"])
        self.A_proj = EmbeddingNet(h, o, None, hp["proj_dropout"])
        self.V_proj = EmbeddingNet(h, o, None, hp["proj_dropout"])
        self.W_proj = EmbeddingNet(dims.text, o, None, hp["proj_dropout"])
        self.D = EmbeddingNet(o, dims.text, None, hp["dec_dropout"])
        self.A_rec = nn.Linear(o, h)  # φ is signed (mean of ReLU outputs + TCN embedding): a linear reconstructor
        self.V_rec = nn.Linear(o, h)
        if not 0 < hp["qdma_lr_scale"] <= 1:
            raise ValueError(f"qdma_lr_scale must be in (0, 1], got {hp['qdma_lr_scale']!r}")
        if hp["qdma_lr_scale"] != 1 and not self.use_qdma:
            raise ValueError(f"{self.name} has no QDMA: qdma_lr_scale must be 1")
        self.ghost = None
        if self.csgm != "none":
            parts = {f"{m}_{p}": mods for m, enc in (("a", self.enc_a), ("v", self.enc_v))
                     for p, mods in enc.parts().items()}
            self.ghost = GhostGrads(parts)
            self.csgm_modality = {group: group.split("_")[0] for group in parts}  # 'a_attention' -> 'a'

    # ------------------------------------------------------------------------------------ forward
    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.use_qdma and self.cross_modal_qdma:  # each modality's steps attend over the other's
            return (self.enc_a(batch.audio_seq, batch.audio_pad, batch.video_seq, batch.video_pad),
                    self.enc_v(batch.video_seq, batch.video_pad, batch.audio_seq, batch.audio_pad))
        if self.use_qdma:
            return self.enc_a(batch.audio_seq, batch.audio_pad), self.enc_v(batch.video_seq, batch.video_pad)
        # Base reads the same per-step input as the QDMA variants (the same crops), pooled here, so that Table II's
        # differences come from the modules, not from the input
        return self.enc_a(_masked_mean(batch.audio_seq, batch.audio_pad)), \
            self.enc_v(_masked_mean(batch.video_seq, batch.video_pad))

    def project(self, phi_a: torch.Tensor, phi_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att_a, att_v = self.cross(phi_a, phi_v)
        return self.A_proj(att_a), self.V_proj(att_v)

    def loss(self, batch: Batch):
        loss, parts, _ = self._loss(batch)
        return loss, parts

    def _loss(self, batch: Batch):
        """Eqs. 9-12. Positives and negatives go through the network as one batch (rows i and B+i)."""
        b = batch.size
        both = _concat(batch, batch.neg)
        phi_a, phi_v = self.encode(both)
        th_a, th_v = self.project(phi_a, phi_v)
        th_w = self.W_proj(torch.cat([batch.text, batch.neg.text]))
        rho_a, rho_v, rho_w = self.D(th_a), self.D(th_v), self.D(th_w)
        p, n = slice(0, b), slice(b, 2 * b)
        w = batch.text
        t = lambda a, pos, neg: triplet(a, pos, neg, self.hp["margin"])  # noqa: E731
        parts = {
            "t": t(th_a[p], th_w[p], th_a[n]) + t(th_v[p], th_w[p], th_v[n])  # Eq. 9
            + t(th_w[p], th_a[p], th_w[n]) + t(th_w[p], th_v[p], th_w[n]),
            "rec": mse(rho_a[p], w) + mse(rho_v[p], w) + mse(rho_w[p], w),  # Eq. 10: l_rec
            "ct": t(rho_w[p], rho_a[p], rho_a[n]) + t(rho_w[p], rho_v[p], rho_v[n]),  # l_ct
            "w": t(th_w[p], th_a[p], th_a[n]) + t(th_w[p], th_v[p], th_v[n])  # l_w
            + t(th_a[p], th_w[p], th_w[n]) + t(th_v[p], th_w[p], th_w[n]),
            "r": mse(self.A_rec(th_a[p]), phi_a[p]) + mse(self.V_rec(th_v[p]), phi_v[p])  # Eq. 11
            + mse(th_a[p], th_w[p]) + mse(th_v[p], th_w[p]),
        }
        theta = {"a": th_a[p].detach(), "v": th_v[p].detach(), "w": th_w[p].detach()}
        theta_neg = {"a": th_a[n].detach(), "v": th_v[n].detach(), "w": th_w[n].detach()}
        return sum(parts.values()), parts, (theta, theta_neg)

    # ------------------------------------------------------------------------------------ training
    def qdma_part_params(self) -> list[nn.Parameter]:
        """The parameters of the QDMA parts CSGM modulates (decision 5), both modalities."""
        if not self.use_qdma:
            return []
        mods = [m for enc in (self.enc_a, self.enc_v) for part in enc.parts().values() for m in part]
        return [p for m in mods for p in (m.weight, getattr(m, "bias", None)) if p is not None]

    def configure_optimizers(self, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
        scale = self.hp["qdma_lr_scale"]
        if scale == 1:
            return super().configure_optimizers(lr, weight_decay)
        scaled = {id(p) for p in self.qdma_part_params()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in scaled]},
                  {"params": self.qdma_part_params(), "lr": lr * scale}]
        return [torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)]

    def train_step(self, batch: Batch, optimizers):
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        if self.ghost is None:
            loss, parts, _ = self._loss(batch)
            loss.backward()
        else:
            with self.ghost.capture(batch.size):
                loss, parts, (theta, theta_neg) = self._loss(batch)
                loss.backward()
            with torch.profiler.record_function(CSGM_RANGE):  # a named range the benchmarks time CSGM by
                mod = modulate(self.ghost, self.csgm_modality,
                               convergence_rates(theta, theta_neg, self.hp["csgm_normalise"]), self.hp["gamma"],
                               use_optimisation_rate=self.csgm == "full", noise=self.hp["noise"],
                               normalise=self.hp["csgm_normalise"], update=self.hp["csgm_update"], rho=self.rho)
            parts = {**parts, "eta_a": mod.eta["a_attention"].mean(), "eta_v": mod.eta["v_attention"].mean(),
                     **csgm_statistics(mod, self.csgm_modality, self.hp["gamma"])}
            with scale_steps(self.ghost, mod.step_scale):
                opt.step()
            return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
        opt.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    # ------------------------------------------------------------------------------------ evaluation
    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, theta_v = self.project(*self.encode(batch))
        return {"video": theta_v}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"video": self.W_proj(text)}


def _masked_mean(seq: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    valid = (~pad).unsqueeze(-1).to(seq.dtype)
    return (seq * valid).sum(1) / valid.sum(1).clamp(min=1)


def _concat(a: Batch, b: Batch) -> Batch:
    def cat(x, y):
        return None if x is None else torch.cat([x, y])
    return Batch(audio=cat(a.audio, b.audio), video=cat(a.video, b.video), label=cat(a.label, b.label),
                 text=cat(a.text, b.text), audio_seq=cat(a.audio_seq, b.audio_seq),
                 audio_pad=cat(a.audio_pad, b.audio_pad), video_seq=cat(a.video_seq, b.video_seq),
                 video_pad=cat(a.video_pad, b.video_pad))


@register
class DAANBase(DAAN):
    name = "daan_base"
    display_name = "Base (MLP + cross-attention)"
    family = "Ablation"
    use_qdma = False
    csgm = "none"


@register
class DAANBaseQDMA(DAAN):
    name = "daan_qdma"
    display_name = "Base + QDMA"
    family = "Ablation"
    csgm = "none"


@register
class DAANBaseQDMACSGMConvergence(DAAN):
    name = "daan_qdma_csgm_vc"
    display_name = "Base + QDMA + CSGM (V_c only)"
    family = "Ablation"
    csgm = "convergence"
