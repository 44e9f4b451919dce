"""SACMA: self-attention and cross-modal attention (Yang et al., Information Fusion 2025). Equation map in
docs/models/sacma.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.batch import Batch
from training.losses import mse
from training.models import register
from training.models.base import InputDims
from training.models.temporal_transformer import (
    AUDIO,
    BACKBONE_HPARAMS,
    CLS,
    VIDEO,
    TemporalAVModel,
    attention_mask,
)

PAPER_TEXT_WEIGHTS = {"paper": {"a_w": 0.8, "v_w": 0.8}}
# The six contrastive pairs of Eq. 13 in the order of the weights: (x, y) names the embeddings theta_x, theta_y.
CCL_PAIRS = (("a", "w"), ("v", "w"), ("a", "v"), ("o", "w"), ("a", "o"), ("v", "o"))
# Eq. 15: the cosine-similarity pairs
COS_PAIRS = (("o", "w"), ("a", "w"), ("v", "w"), ("a", "v"))
PASSES = ("a", "v", "o")  # [CLS + audio] self-attention, [CLS + video] self-attention, [CLS + audio + video] cross


def symmetric_info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 14: cross-entropy of the cosine-similarity matrix / τ along rows plus along columns; positives are the
    diagonal (sample i with sample i), every other sample of the batch is a negative."""
    sim = F.normalize(x, dim=1, eps=1e-8) @ F.normalize(y, dim=1, eps=1e-8).t() / temperature
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target)


def cosine_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 16, averaged over the batch: 1 - cos(x, y)."""
    return (1 - F.cosine_similarity(x, y, dim=1)).mean()


def sacma_masks(groups: torch.Tensor, key_pad: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three passes of the shared transformer over the [CLS, audio, video] layout: self-attention over
    [CLS + audio] (video keys invisible), over [CLS + video] (audio keys invisible), and cross-attention over all."""
    return {"a": attention_mask(groups, key_pad, "self", visible=(CLS, AUDIO)),
            "v": attention_mask(groups, key_pad, "self", visible=(CLS, VIDEO)),
            "o": attention_mask(groups, key_pad, "cross")}


@register
class SACMA(TemporalAVModel):
    name = "sacma"
    display_name = "SACMA"
    family = "Audio-visual"
    paper = ("Yang, Li, Wu, Chen, Ruan, Li, Hou, Self-attention and cross-modal attention for audio-visual zero-shot "
             "learning, Information Fusion 2025")
    hparams = {
        **BACKBONE_HPARAMS,
        "temperature": 0.05,  # τ of Eq. 14
        # λ of Eq. 13 per pair (CCL_PAIRS order); fixed constants, the released code's values
        "ccl_weights": {"a_w": 0.1, "v_w": 0.1, "a_v": 0.1, "o_w": 1.0, "a_o": 0.1, "v_o": 0.1},
        "loss_weights": "code",  # "paper": the text-audio and text-video weights of Eq. 13 set to 0.8 (paper's text)
        "cos_weight": 0.2,  # λ_cos of Eq. 8
        "reg_loss": True,  # Eq. 18
        "rec_loss": True,  # Eq. 19
    }

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        expected = {f"{x}_{y}" for x, y in CCL_PAIRS}
        if set(hp["ccl_weights"]) != expected:
            raise ValueError(f"ccl_weights needs exactly the keys {sorted(expected)}, got {sorted(hp['ccl_weights'])}")
        if hp["loss_weights"] not in PAPER_TEXT_WEIGHTS and hp["loss_weights"] != "code":
            raise ValueError(f"loss_weights must be 'code' or 'paper', got {hp['loss_weights']!r}")
        # the paper's text gives the text-audio and text-video pairs 0.8; the released code 0.1 (docs/models/sacma.md)
        self.ccl_weights = {**hp["ccl_weights"], **PAPER_TEXT_WEIGHTS.get(hp["loss_weights"], {})}

    def thetas(self, batch: Batch) -> dict[str, torch.Tensor]:
        """theta_a, theta_v, theta_o: the shared O_proj on the CLS outputs of the three passes. The passes run as one
        batched transformer call (a pass's invisible tokens are masked out as keys, so its CLS output is that of
        the shorter sequence); O_proj is applied per pass, so each keeps its own BatchNorm batch as in the
        reference."""
        x, groups, key_pad = self.embed_tokens(batch)
        masks = sacma_masks(groups, key_pad)
        b = x.shape[0]
        cls = self.cls_output(x.repeat(3, 1, 1), torch.cat([masks[p] for p in PASSES]))
        return {p: self.O_proj(c) for p, c in zip(PASSES, cls.split(b))}

    def loss(self, batch: Batch):
        hp, w = self.hp, batch.text
        th = self.thetas(batch)
        th["w"] = self.W_proj(w)
        weights = self.ccl_weights
        parts = {
            "ccl": sum(weights[f"{x}_{y}"] * symmetric_info_nce(th[x], th[y], hp["temperature"])
                       for x, y in CCL_PAIRS),  # Eq. 13
            "cos": hp["cos_weight"] * sum(cosine_loss(th[x], th[y]) for x, y in COS_PAIRS),  # Eq. 15
        }
        if hp["reg_loss"]:  # Eq. 18
            parts["reg"] = mse(th["o"], th["w"]) + mse(th["a"], th["w"]) + mse(th["v"], th["w"])
        if hp["rec_loss"]:  # Eq. 19
            parts["rec"] = sum(mse(self.D_o(th[m]), w) for m in "oav") + mse(self.D_w(th["w"]), w)
        return sum(parts.values()), parts

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        x, groups, key_pad = self.embed_tokens(batch)
        return {"both": self.O_proj(self.cls_output(x, attention_mask(groups, key_pad, "cross")))}
