"""Coordinate-and-Generalize: attention fusion of masked audio and visual features, mutual knowledge distillation
between the two branches' class scores, and transferable masks trained towards gradient-derived pseudo-labels
(anonymous double-blind submission, seed paper 003). Equation map in docs/models/coordgen.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.models import register
from training.models.base import InputDims, ZSLModel
from training.models.layers import EmbeddingNet, PreNormTransformer


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ½(KL(p‖q) + KL(q‖p)) per row, from log-probabilities over the last axis; mean over rows."""
    p, q = log_p.exp(), log_q.exp()
    return 0.5 * ((p - q) * (log_p - log_q)).sum(-1).mean()


def top_k_pseudo_labels(grad: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 9: 1 at the ``k`` input dimensions with the largest |gradient| of each row, 0 elsewhere."""
    idx = grad.abs().topk(k, dim=-1).indices
    return torch.zeros_like(grad).scatter_(-1, idx, 1.0)


def kept_dimensions(dim: int, masked_proportion: float, reading: str = "masked") -> int:
    """Number of pseudo-label ones. Eq. 9's "masked proportion" read as the share of the ``dim`` input dimensions
    masked out (``masked``: label 0) or as the share kept (``kept``: label 1); docs/models/coordgen.md."""
    if reading == "kept":
        return max(1, round(masked_proportion * dim))
    if reading != "masked":
        raise ValueError(f"masked_proportion_reading must be 'masked' or 'kept', got {reading!r}")
    return dim - round(masked_proportion * dim)


def mixture_log_prob(log_p_v: torch.Tensor, log_p_a: torch.Tensor, beta: float) -> torch.Tensor:
    """log of Eq. 6, p = β p_v + (1-β) p_a, computed in log space."""
    weights = torch.tensor([beta, 1 - beta], dtype=log_p_v.dtype, device=log_p_v.device).log()
    return torch.logsumexp(torch.stack([log_p_v, log_p_a]) + weights[:, None, None], dim=0)


def mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """Two-layer MLP with an unbounded output (class scores are dot products of these outputs)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))


def mask_net(dim: int, hidden: int) -> nn.Sequential:
    """ψ: two-layer MLP from a feature to a mask of the same size in (0, 1). BatchNorm because raw features come
    at very different scales (VGGish 0-255, C3D fc7, SeLaVi)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim),
                         nn.Sigmoid())


@register
class CoordinateGeneralize(ZSLModel):
    name = "coordgen"
    display_name = "Coordinate-and-Generalize"
    family = "Audio-visual"
    paper = ("Anonymous, Coordinate and Generalize: A Unified Framework for Audio-Visual Zero-Shot Learning "
             "(double-blind submission)")
    hparams = {
        "embed_dim": 300,  # output of the attention network
        "hidden_dim": 512,  # hidden layers of the input embeddings, f_v, f_a, f_w
        "mask_hidden_dim": 512,  # hidden layer of psi_V, psi_A
        "latent_dim": 64,  # common space of f_v, f_a, f_w
        "attn_heads": 3,
        "attn_dim_head": 100,
        "attn_mlp_dim": 64,
        "attn_depth": 1,
        "enc_dropout": 0.2,  # input embeddings and attention network
        "proj_dropout": 0.3,  # f_v, f_a, f_w
        "momentum": 0.1,  # output BatchNorm of the input embeddings
        "temperature": 1.0,  # tau, Eqs. 3-4
        "branch_weight": 0.5,  # beta of Eq. 6 (not the calibrated-stacking beta)
        "lambda_kd": 1.0,  # lambda_1, Eq. 11
        "lambda_mask": 0.5,  # lambda_2, Eq. 11
        "masked_proportion": 0.1,  # share of input dimensions whose pseudo-label is 0 (reading "masked")
        "masked_proportion_reading": "masked",  # or "kept": the share whose pseudo-label is 1
    }
    needs_negatives = False
    eval_modes = ("video",)
    primary_mode = "video"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        if not 0 <= hp["masked_proportion"] < 1:
            raise ValueError(f"masked_proportion must be in [0, 1), got {hp['masked_proportion']}")
        if not 0 < hp["branch_weight"] < 1:
            raise ValueError(f"branch_weight must be in (0, 1), got {hp['branch_weight']}")
        e, h, z = hp["embed_dim"], hp["hidden_dim"], hp["latent_dim"]
        self.psi_a = mask_net(dims.audio, hp["mask_hidden_dim"])
        self.psi_v = mask_net(dims.video, hp["mask_hidden_dim"])
        # ATT: each masked feature embedded to a token of width e, then attention + feed-forward with residuals
        self.A_emb = EmbeddingNet(dims.audio, e, h, hp["enc_dropout"], hp["momentum"])
        self.V_emb = EmbeddingNet(dims.video, e, h, hp["enc_dropout"], hp["momentum"])
        self.pos = nn.Parameter(torch.randn(2, e))
        self.att = PreNormTransformer(e, hp["attn_depth"], hp["attn_heads"], hp["attn_dim_head"],
                                      hp["attn_mlp_dim"], hp["enc_dropout"])
        self.f_a = mlp(e, h, z, hp["proj_dropout"])
        self.f_v = mlp(e, h, z, hp["proj_dropout"])
        self.f_w = mlp(dims.text, h, z, hp["proj_dropout"])

    # ---- hooks
    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        super().set_training_classes(class_ids, class_text)
        lookup = torch.full((int(class_ids.max()) + 1,), -1, dtype=torch.long, device=class_ids.device)
        lookup[class_ids] = torch.arange(len(class_ids), device=class_ids.device)
        self.class_index = lookup  # global class id -> column of the training-class score matrix

    # ---- forward pieces
    def embed(self, audio: torch.Tensor, video: torch.Tensor):
        """Eqs. 1-2: masks, masked features, attention fusion; then f_a, f_v. Returns the masks and the two
        branches' embeddings in the common space."""
        m_a, m_v = self.psi_a(audio), self.psi_v(video)
        tokens = torch.stack([self.A_emb(audio * m_a) + self.pos[0], self.V_emb(video * m_v) + self.pos[1]], dim=1)
        c = self.att(tokens)
        return m_a, m_v, self.f_a(c[:, 0]), self.f_v(c[:, 1])

    def log_scores(self, z: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Eqs. 3-4: log-softmax over classes of f(c)·f_w(w)/τ."""
        return torch.log_softmax(z @ classes.T / self.hp["temperature"], dim=-1)

    # ---- training
    def loss(self, batch: Batch):
        hp = self.hp
        audio = batch.audio.detach().requires_grad_(True)
        video = batch.video.detach().requires_grad_(True)
        m_a, m_v, z_a, z_v = self.embed(audio, video)
        classes = self.f_w(self.train_class_text)
        log_p_a, log_p_v = self.log_scores(z_a, classes), self.log_scores(z_v, classes)
        p = mixture_log_prob(log_p_v, log_p_a, hp["branch_weight"]).exp().clamp(0, 1)  # exp may round past 1
        target = F.one_hot(self.class_index[batch.label], p.shape[1]).to(p.dtype)
        cls = F.binary_cross_entropy(p, target, reduction="none").sum(1).mean()  # Eq. 7
        kd = symmetric_kl(log_p_v, log_p_a)  # Eq. 5
        # Eq. 8: gradients of L_CLS w.r.t. the input features (one extra backward pass; graph kept for the total)
        g_a, g_v = torch.autograd.grad(cls, (audio, video), retain_graph=True)
        pseudo_a = top_k_pseudo_labels(g_a, kept_dimensions(audio.shape[1], hp["masked_proportion"],
                                                              hp["masked_proportion_reading"]))
        pseudo_v = top_k_pseudo_labels(g_v, kept_dimensions(video.shape[1], hp["masked_proportion"],
                                                              hp["masked_proportion_reading"]))
        mask = (pseudo_v - m_v).norm(dim=1).mean() + (pseudo_a - m_a).norm(dim=1).mean()  # Eq. 10
        parts = {"cls": cls, "kd": hp["lambda_kd"] * kd, "mask": hp["lambda_mask"] * mask}
        return sum(parts.values()), parts  # Eq. 11

    # ---- evaluation
    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, _, z_a, z_v = self.embed(batch.audio, batch.video)
        return {"audio": z_a, "visual": z_v}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": self.f_w(text)}

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-log p of Eq. 6 over the candidate classes: argmin is Eq. 12's argmax p, and calibrated stacking's β
        then shifts seen-class log-probabilities."""
        w = classes["text"]
        log_p = mixture_log_prob(self.log_scores(videos["visual"], w), self.log_scores(videos["audio"], w),
                                 self.hp["branch_weight"])
        return {"video": -log_p}
