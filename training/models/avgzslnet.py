"""AVGZSLNet (Mazumder et al., WACV 2021): audio, video and text embedded into one 64-d space by three nets, and a
shared decoder that reconstructs the class text from each. Equation map in docs/models/avgzslnet.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.data.batch import Batch
from training.losses import triplet
from training.models import register
from training.models.base import InputDims, ZSLModel


def two_layer_net(d_in: int, hidden: int, d_out: int, dropout: float, batch_norm: bool,
                  out_relu: bool = False) -> nn.Sequential:
    """Linear -> [BatchNorm] -> ReLU -> Dropout -> Linear [-> ReLU]: the embedding net of the AVGZSLNet and CJME
    baselines (unlike :class:`~training.models.layers.EmbeddingNet`, the output layer has no BatchNorm or dropout)."""
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
                               nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)]
    if out_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def embedding_distances(videos: dict[str, torch.Tensor], text: torch.Tensor) -> dict[str, torch.Tensor]:
    """L2 distances of the audio and video embeddings to the class embeddings, per modality."""
    return {"audio": torch.cdist(videos["audio"], text), "video": torch.cdist(videos["video"], text)}


@register
class AVGZSLNet(ZSLModel):
    name = "avgzslnet"
    display_name = "AVGZSLNet"
    family = "Audio-visual"
    paper = ("Mazumder et al., AVGZSLNet: Audio-Visual Generalized Zero-Shot Learning by Reconstructing Label "
             "Features from Multi-Modal Embeddings, WACV 2021")
    hparams = {
        "embed_dim": 64,  # joint space of F_A, F_V, F_T
        "embed_hidden": 1024,  # --embeddings_hidden_size: hidden layer of F_A, F_V
        "text_hidden": 300,  # hidden layer of F_T (fixed to 300 in the reference)
        "decoder_hidden": 64,  # --decoder_hidden_size
        "embed_dropout": 0.8,  # --embedding_dropout
        "decoder_dropout": 0.5,  # --decoder_dropout
        "embed_bn": True,  # --embedding_use_bn
        "decoder_bn": True,  # --decoder_use_bn
        "normalize_decoder": True,  # --normalize_decoder_outputs
        "margin": 1.0,  # --margin of every triplet
    }
    eval_modes = ("audio", "video", "both")
    primary_mode = "both"  # the reference selects epochs by, and reports, the sum of the two modality distances

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        e, drop, bn = hp["embed_dim"], hp["embed_dropout"], hp["embed_bn"]
        self.F_A = two_layer_net(dims.audio, hp["embed_hidden"], e, drop, bn)
        self.F_V = two_layer_net(dims.video, hp["embed_hidden"], e, drop, bn)
        self.F_T = two_layer_net(dims.text, hp["text_hidden"], e, drop, bn)
        self.F_DEC = two_layer_net(e, hp["decoder_hidden"], dims.text, hp["decoder_dropout"], hp["decoder_bn"])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        out = self.F_DEC(z)
        return F.normalize(out, dim=1) if self.hp["normalize_decoder"] else out

    def loss(self, batch: Batch):
        t = lambda a, p, n: triplet(a, p, n, self.hp["margin"])  # noqa: E731
        w, neg = batch.text, batch.neg
        # positives and negatives pass separately, as in the reference (separate BatchNorm statistics)
        a, v, s = self.F_A(batch.audio), self.F_V(batch.video), self.F_T(w)
        a_n, v_n, s_n = self.F_A(neg.audio), self.F_V(neg.video), self.F_T(neg.text)
        w_a, w_v, w_s = self.decode(a), self.decode(v), self.decode(s)
        w_a_n, w_v_n = self.decode(a_n), self.decode(v_n)
        l2 = lambda x, y: (x - y).norm(dim=1).mean()  # noqa: E731
        parts = {
            "rec": l2(w_s, w) + l2(w_a, w) + l2(w_v, w),  # cross-modal decoder: reconstruct the label text
            "cmd": t(w_s, w_a, w_a_n) + t(w_s, w_v, w_v_n),  # triplets in the text space
            "ct": t(s, a, a_n) + t(a, s, s_n) + t(s, v, v_n) + t(v, s, s_n),  # composite triplet
        }
        return sum(parts.values()), parts

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"audio": self.F_A(batch.audio), "video": self.F_V(batch.video)}

    def embed_classes(self, text: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"text": self.F_T(text)}

    def distances(self, videos: dict[str, torch.Tensor], classes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        d = embedding_distances(videos, classes["text"])
        return {**d, "both": d["audio"] + d["video"]}
