"""AVCA: audio-visual cross-attention (Mercea et al., CVPR 2022). Equation map in docs/models/avca.md."""

from __future__ import annotations

import torch
from torch import nn

from training.data.batch import Batch
from training.losses import mse, triplet
from training.models import register
from training.models.base import InputDims, ZSLModel
from training.models.layers import EmbeddingNet, PreNormTransformer


@register
class AVCA(ZSLModel):
    name = "avca"
    display_name = "AVCA"
    family = "Audio-visual"
    paper = "Mercea et al., Audio-visual Generalised Zero-shot Learning with Cross-modal Attention and Language, CVPR 2022"
    hparams = {
        "embed_dim": 300,  # k_f: encoder output
        "hidden_dim": 512,  # k_f_hid: encoder and projection hidden layers
        "proj_dim": 64,  # k_proj: joint space
        "attn_heads": 3,
        "attn_dim_head": 100,
        "attn_mlp_dim": 64,  # k_attn_hid
        "attn_depth": 1,
        "enc_dropout": 0.2,  # r_enc: A_enc, V_enc, cross-attention
        "proj_dropout": 0.3,  # r_proj: A_proj, V_proj
        "dec_dropout": 0.5,  # r_dec: W_proj, D, A_rec, V_rec
        "momentum": 0.1,  # output BatchNorm of A_enc, V_enc, A_proj, V_proj
        "margin": 1.0,  # mu
        "additional_triplets": True,  # l_t (Eq. 5), enabled in every reference run
        "reg_loss": True,  # l_r (Eq. 10)
    }
    eval_modes = ("video",)
    primary_mode = "video"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        e, h, p = hp["embed_dim"], hp["hidden_dim"], hp["proj_dim"]
        self.A_enc = EmbeddingNet(dims.audio, e, h, hp["enc_dropout"], hp["momentum"])
        self.V_enc = EmbeddingNet(dims.video, e, h, hp["enc_dropout"], hp["momentum"])
        self.pos = nn.Parameter(torch.randn(2, e))
        self.cross = PreNormTransformer(e, hp["attn_depth"], hp["attn_heads"], hp["attn_dim_head"],
                                        hp["attn_mlp_dim"], hp["enc_dropout"])
        self.A_proj = EmbeddingNet(e, p, h, hp["proj_dropout"], hp["momentum"])
        self.V_proj = EmbeddingNet(e, p, h, hp["proj_dropout"], hp["momentum"])
        self.W_proj = EmbeddingNet(dims.text, p, None, hp["dec_dropout"])
        self.D = EmbeddingNet(p, dims.text, None, hp["dec_dropout"])
        self.A_rec = EmbeddingNet(p, e, None, hp["dec_dropout"])
        self.V_rec = EmbeddingNet(p, e, None, hp["dec_dropout"])

    def branches(self, audio: torch.Tensor, video: torch.Tensor):
        """Eqs. 1-2: encoders, cross-attention over the two tokens, residual, projections."""
        phi_a, phi_v = self.A_enc(audio), self.V_enc(video)
        att = self.cross(torch.stack([phi_a + self.pos[0], phi_v + self.pos[1]], dim=1))
        theta_a = self.A_proj(phi_a + att[:, 0])
        theta_v = self.V_proj(phi_v + att[:, 1])
        return phi_a, phi_v, theta_a, theta_v

    def loss(self, batch: Batch):
        hp, t = self.hp, lambda a, p, n: triplet(a, p, n, self.hp["margin"])
        w, neg = batch.text, batch.neg
        phi_a, phi_v, th_a, th_v = self.branches(batch.audio, batch.video)
        _, _, th_a_n, th_v_n = self.branches(neg.audio, neg.video)
        th_w, th_w_n = self.W_proj(w), self.W_proj(neg.text)
        rho_a, rho_v, rho_w = self.D(th_a), self.D(th_v), self.D(th_w)
        rho_a_n, rho_v_n = self.D(th_a_n), self.D(th_v_n)
        parts = {
            "rec": mse(rho_a, w) + mse(rho_v, w) + mse(rho_w, w),  # Eq. 7
            "ct": t(rho_w, rho_a, rho_a_n) + t(rho_w, rho_v, rho_v_n),  # Eq. 8
            "w": t(th_w, th_a, th_a_n) + t(th_w, th_v, th_v_n) + t(th_a, th_w, th_w_n) + t(th_v, th_w, th_w_n),  # Eq. 9
        }
        if hp["additional_triplets"]:  # Eq. 5
            parts["t"] = t(th_a, th_w, th_a_n) + t(th_v, th_w, th_v_n) + t(th_w, th_a, th_w_n) + t(th_w, th_v, th_w_n)
        if hp["reg_loss"]:  # Eq. 10
            parts["r"] = (mse(self.A_rec(th_a), phi_a) + mse(self.V_rec(th_v), phi_v)
                          + mse(th_v, th_w) + mse(th_a, th_w))
        return sum(parts.values()), parts

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, _, _, theta_v = self.branches(batch.audio, batch.video)
        return {"video": theta_v}  # Eq. 3: theta_v carries both modalities through the cross-attention

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"video": self.W_proj(text)}
