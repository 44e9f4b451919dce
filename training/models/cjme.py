"""CJME: coordinated joint multimodal embeddings (Parida et al., WACV 2020). Audio, video and text embedded into one
64-d space; a modality-attention gate picks, per video, the modality that is trusted at test time. Equation map in
docs/models/cjme.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.losses import mse
from training.models import register
from training.models.avgzslnet import embedding_distances, two_layer_net
from training.models.base import InputDims, ZSLModel

GATE_WEIGHTINGS = ("sample", "batch")


def prediction_entropy(emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(emb · class_embᵀ) over the training classes: how unsure a modality is about the class."""
    logp = F.log_softmax(emb @ class_emb.T, dim=1)
    return -(logp.exp() * logp).sum(1)


def gate_targets(h_audio: torch.Tensor, h_video: torch.Tensor, margin: float) -> torch.Tensor:
    """Supervision of the gate: 1 (video) where audio is the more uncertain modality by more than ``margin``,
    0 (audio) where video is, 0.5 where their entropies are within ``margin`` of each other."""
    diff = h_video - h_audio
    return torch.where(diff > margin, 0.0, torch.where(diff < -margin, 1.0, 0.5)).to(h_audio.dtype)


@register
class CJME(ZSLModel):
    name = "cjme"
    display_name = "CJME"
    family = "Audio-visual"
    paper = ("Parida et al., Coordinated Joint Multimodal Embeddings for Generalized Audio-Visual Zero-shot "
             "Classification and Retrieval of Videos, WACV 2020")
    hparams = {
        "embed_dim": 64,
        "embed_hidden": 1024,  # --embeddings_hidden_size: hidden layer of the audio and video nets
        "text_hidden": 300,  # hidden layer of the text net (fixed to 300 in the reference)
        "dropout": 0.2,  # --dropout_baselines, in the three embedding nets
        "embed_bn": True,  # --embedding_use_bn
        "margin": 1.0,  # triplet margin
        "entropy_margin": 0.1,  # entropy difference below which the gate target is 0.5
        "gate_threshold": 0.5,  # attention >= threshold -> video
        "gate_weighting": "sample",  # "sample": per-video gate in the triplet loss; "batch": the reference's broadcast
    }
    eval_modes = ("audio", "video", "both")
    primary_mode = "both"  # the gated combination; the reference selects and reports it

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        if hp["gate_weighting"] not in GATE_WEIGHTINGS:
            raise ValueError(f"gate_weighting must be one of {GATE_WEIGHTINGS}, got {hp['gate_weighting']!r}")
        e, drop, bn = hp["embed_dim"], hp["dropout"], hp["embed_bn"]
        self.f_a = two_layer_net(dims.audio, hp["embed_hidden"], e, drop, bn, out_relu=True)
        self.f_v = two_layer_net(dims.video, hp["embed_hidden"], e, drop, bn, out_relu=True)
        self.f_t = two_layer_net(dims.text, hp["text_hidden"], e, drop, bn, out_relu=True)
        self.gate = nn.Sequential(nn.BatchNorm1d(dims.audio + dims.video), nn.Linear(dims.audio + dims.video, 1),
                                  nn.Sigmoid())

    def attention(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """(B,) soft modality attention: 1 = video, 0 = audio."""
        return self.gate(torch.cat([audio, video], dim=1)).squeeze(1)

    def choose_video(self, attention: torch.Tensor) -> torch.Tensor:
        return attention >= self.hp["gate_threshold"]

    def loss(self, batch: Batch):
        hp, neg = self.hp, batch.neg
        a, v, s = self.f_a(batch.audio), self.f_v(batch.video), self.f_t(batch.text)
        a_n, v_n = self.f_a(neg.audio), self.f_v(neg.video)
        alpha = self.attention(batch.audio, batch.video)
        with torch.no_grad():  # the gate's target comes from fixed (detached) class predictions
            classes = self.f_t(self.train_class_text)
            target = gate_targets(prediction_entropy(a, classes), prediction_entropy(v, classes),
                                  hp["entropy_margin"])
        l_ta = F.triplet_margin_loss(s, a, a_n, margin=hp["margin"], reduction="none")
        l_tv = F.triplet_margin_loss(s, v, v_n, margin=hp["margin"], reduction="none")
        if hp["gate_weighting"] == "batch":
            ct = (1 - alpha).mean() * l_ta.mean() + alpha.mean() * l_tv.mean()
        else:
            ct = ((1 - alpha) * l_ta + alpha * l_tv).mean()
        parts = {"ct": ct, "av": mse(a, v), "gate": mse(alpha, target)}
        return sum(parts.values()), parts

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        use_video = self.choose_video(self.attention(batch.audio, batch.video))
        return {"audio": self.f_a(batch.audio), "video": self.f_v(batch.video), "use_video": use_video}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": self.f_t(text)}

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d = embedding_distances(videos, classes["text"])
        both = torch.where(videos["use_video"][:, None], d["video"], d["audio"])  # the thresholded gate
        return {**d, "both": both}
