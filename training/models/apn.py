"""APN: attribute prototype network (Xu et al., NeurIPS 2020) on audio-visual feature sequences.

The benchmark adapts APN by feeding concatenated audio-visual features in place of image features and using the class
text embedding's dimensions as the "attributes". APN needs a map of local features for its prototype branch; here the
locations are the time steps of the video and audio sequences (see docs/models/apn.md for the equation map and every
adaptation decision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.models import register
from training.models.base import InputDims, ZSLModel


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, C): mean over the valid steps."""
    w = valid.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


def relative_positions(valid: torch.Tensor) -> torch.Tensor:
    """(B, T) centre of each step as a fraction of the sample's valid length, in (0, 1); 0 at padded steps.

    The 1-D analogue of APN's grid coordinates: images are resized to one size, so a location is a fraction of the
    image; here a step is a fraction of the clip, which also puts audio and video steps on one time axis."""
    n = valid.sum(1, keepdim=True).clamp(min=1).to(torch.float32)
    steps = torch.arange(valid.shape[1], device=valid.device, dtype=torch.float32)[None]
    return torch.where(valid, (steps + 0.5) / n, torch.zeros_like(steps))


def attribute_groups(class_text: torch.Tensor, n_groups: int) -> torch.Tensor:
    """(K,) group index of every text dimension, for the attribute-decorrelation loss.

    APN groups attributes that describe the same part (e.g. all "wing colour" attributes). Text dimensions have no
    names, so dimensions that co-vary (positively or negatively) across the training classes are grouped: |correlation|
    across classes, farthest-point medoids (the first is the dimension of largest variance), nearest-medoid assignment.
    Deterministic; no samples are used, only the training classes' text."""
    x = class_text - class_text.mean(0, keepdim=True)
    first = x.var(0, unbiased=False).argmax()
    x = F.normalize(x, dim=0)
    similarity = (x.T @ x).abs()  # (K, K)
    g = min(n_groups, class_text.shape[1])
    medoids = torch.zeros(g, dtype=torch.long, device=class_text.device)
    medoids[0] = first
    closest = similarity[first]
    for i in range(1, g):
        medoids[i] = closest.argmin()
        closest = torch.maximum(closest, similarity[medoids[i]])
    return similarity[:, medoids].argmax(1)


def decorrelation_loss(prototypes: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """APN's attribute decorrelation (group lasso): Σ_g Σ_c ||(p_k^c)_{k ∈ S_g}||₂, averaged over the non-empty
    groups and the C channels so that its weight does not depend on their number. ``prototypes`` is (K, C),
    ``groups`` (K,) in [0, n_groups)."""
    sq = torch.zeros(n_groups, prototypes.shape[1], device=prototypes.device, dtype=prototypes.dtype)
    sq = sq.index_add(0, groups, prototypes.pow(2))
    present = sq > 0
    norms = torch.where(present, sq, torch.ones_like(sq)).sqrt() * present  # no inf gradient at an all-zero group
    n_present = torch.bincount(groups, minlength=n_groups).gt(0).sum()
    return norms.sum() / (n_present * prototypes.shape[1])


def compactness_loss(maps: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """APN's compactness: Σ_l M̃_k(l) (τ_l − τ̃_k)², the spread of each attribute's normalised similarity map around
    its peak τ̃_k; mean over samples and attributes. ``maps`` (B, L, K), ``valid``/``positions`` (B, L)."""
    masked = maps.masked_fill(~valid[..., None], float("-inf"))
    weights = masked.softmax(dim=1)
    peak = positions.gather(1, masked.argmax(dim=1))  # (B, K)
    spread = (weights * (positions[:, :, None] - peak[:, None, :]).pow(2)).sum(1)
    return spread.mean()


@register
class APN(ZSLModel):
    name = "apn"
    display_name = "APN"
    family = "ZSL"
    paper = "Xu et al., Attribute Prototype Network for Zero-Shot Learning, NeurIPS 2020"
    hparams = {
        "hidden_dim": 512,  # C: channels of the local (per-step) features, the backbone feature map of APN
        "dropout": 0.0,  # on the pooled feature before the ALE projection (training only)
        "lambda_reg": 1.0,  # attribute regression of the prototype branch
        "lambda_ad": 0.01,  # attribute decorrelation
        "lambda_cpt": 0.01,  # similarity-map compactness
        "ad_groups": 8,  # attribute groups of text dimensions for the decorrelation loss
    }
    needs_sequences = True  # the steps are APN's locations
    needs_negatives = False  # the softmax runs over every training class
    # The reference scores APN in its "audio" evaluation mode: L2 between the projected audio-visual feature and the
    # raw class text (the mode's name is historical; the projected feature carries both modalities).
    eval_modes = ("audio",)
    primary_mode = "audio"

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        c, k = hp["hidden_dim"], dims.text
        self.local_video = nn.Sequential(nn.Linear(dims.video, c), nn.ReLU())
        self.local_audio = nn.Sequential(nn.Linear(dims.audio, c), nn.ReLU())
        self.ale = nn.Linear(2 * c, k, bias=False)  # V of the base module: pooled feature -> attribute space
        self.prototypes = nn.Parameter(torch.randn(k, c) / c ** 0.5)  # p_k, one per attribute (text dimension)
        self.dropout = nn.Dropout(hp["dropout"])

    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        super().set_training_classes(class_ids, class_text)
        self.train_column = torch.full((int(class_ids.max()) + 1,), -1, dtype=torch.long, device=class_ids.device)
        self.train_column[class_ids] = torch.arange(len(class_ids), device=class_ids.device)
        self.groups = attribute_groups(class_text, self.hp["ad_groups"])
        self.n_groups = int(self.groups.max()) + 1

    # ---- the two branches
    def local_features(self, batch: Batch):
        """Locations (video steps, then audio steps) in a shared C-dim space, their masks and relative times, and
        the pooled feature [video mean; audio mean] (video first, as the bilinear baselines of this project)."""
        hv, ha = self.local_video(batch.video_seq), self.local_audio(batch.audio_seq)
        valid_v, valid_a = ~batch.video_pad, ~batch.audio_pad
        pooled = torch.cat([masked_mean(hv, valid_v), masked_mean(ha, valid_a)], dim=1)
        tokens = torch.cat([hv, ha], dim=1)
        valid = torch.cat([valid_v, valid_a], dim=1)
        positions = torch.cat([relative_positions(valid_v), relative_positions(valid_a)], dim=1)
        return tokens, valid, positions, pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Base module: V f̄, the projected audio-visual feature in text space."""
        return self.ale(self.dropout(pooled))

    def attribute_maps(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, K) similarity M_k(l) = p_kᵀ f_l of every location with every attribute prototype."""
        return tokens @ self.prototypes.T

    @staticmethod
    def predicted_attributes(maps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """â_k = max over valid locations of M_k (max-pooling of the similarity map)."""
        return maps.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)

    def class_scores(self, z: torch.Tensor, class_text: torch.Tensor) -> torch.Tensor:
        """−||V f̄ − φ(y)||² for every class: the training score that the L2 evaluation ranks by. Equals the ALE
        compatibility 2 (V f̄)ᵀφ(y) up to terms that are constant per sample (||V f̄||²) or, with unit-norm text,
        constant per class (||φ(y)||²), so the softmax is the ALE softmax with a factor 2."""
        return -(z.pow(2).sum(1, keepdim=True) - 2 * z @ class_text.T + class_text.pow(2).sum(1)[None])

    def loss(self, batch: Batch):
        tokens, valid, positions, pooled = self.local_features(batch)
        z = self.project(pooled)
        target = self.train_column[batch.label]
        maps = self.attribute_maps(tokens)
        attributes = self.predicted_attributes(maps, valid)
        parts = {
            "cls": F.cross_entropy(self.class_scores(z, self.train_class_text), target),
            "reg": (attributes - batch.text).pow(2).sum(1).mean(),
            "ad": decorrelation_loss(self.prototypes, self.groups, self.n_groups),
            "cpt": compactness_loss(maps, valid, positions),
        }
        hp = self.hp
        total = parts["cls"] + hp["lambda_reg"] * parts["reg"] + hp["lambda_ad"] * parts["ad"] \
            + hp["lambda_cpt"] * parts["cpt"]
        return total, parts

    # ---- evaluation: the base module only, as APN
    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        _, _, _, pooled = self.local_features(batch)
        return {"audio": self.project(pooled)}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"audio": text}  # the raw class text, as the reference
