"""TCaF: temporal cross-attention framework (Mercea et al., ECCV 2022). Equation map in docs/models/tcaf.md."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.data.batch import Batch
from training.losses import mse
from training.models import register
from training.models.base import InputDims
from training.models.temporal_transformer import BACKBONE_HPARAMS, TemporalAVModel, attention_mask


@register
class TCaF(TemporalAVModel):
    name = "tcaf"
    display_name = "TCaF"
    family = "Audio-visual"
    paper = ("Mercea, Hummel, Koepke, Akata, Temporal and cross-modal attention for audio-visual zero-shot "
             "learning, ECCV 2022")
    hparams = {
        **BACKBONE_HPARAMS,
        "attention": "cross",  # "cross" (TCaF), "self" or "full": the paper's attention ablation
        "ce_loss": True,  # l_ce over all training classes
        "reg_loss": True,  # l_reg = MSE(theta_o, theta_w)
        "rec_loss": True,  # l_rec = MSE(w, D_o(theta_o)) + MSE(w, D_w(theta_w))
    }

    def __init__(self, dims: InputDims, **hp):
        super().__init__(dims, **hp)
        self._compact: torch.Tensor | None = None

    def set_training_classes(self, class_ids: torch.Tensor, class_text: torch.Tensor) -> None:
        """Keeps the training classes' text for l_ce and a global-id -> 0..C-1 lookup for its targets."""
        super().set_training_classes(class_ids, class_text)
        lookup = torch.full((int(class_ids.max()) + 1,), -1, dtype=torch.long, device=class_ids.device)
        lookup[class_ids] = torch.arange(len(class_ids), device=class_ids.device)
        self._compact = lookup

    def theta_o(self, batch: Batch) -> torch.Tensor:
        x, groups, key_pad = self.embed_tokens(batch)
        return self.O_proj(self.cls_output(x, attention_mask(groups, key_pad, self.hp["attention"])))

    def loss(self, batch: Batch):
        hp, w = self.hp, batch.text
        th_o, th_w = self.theta_o(batch), self.W_proj(w)
        parts = {}
        if hp["ce_loss"]:
            if self._compact is None:
                raise RuntimeError("TCaF's cross-entropy needs set_training_classes() before training")
            logits = th_o @ self.W_proj(self.train_class_text).t()  # no temperature, as the reference
            parts["ce"] = F.cross_entropy(logits, self._compact[batch.label])
        if hp["reg_loss"]:
            parts["reg"] = mse(th_o, th_w)
        if hp["rec_loss"]:
            parts["rec"] = mse(self.D_o(th_o), w) + mse(self.D_w(th_w), w)
        if not parts:
            raise ValueError("TCaF needs at least one of ce_loss, reg_loss, rec_loss")
        return sum(parts.values()), parts

    def embed_videos(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"both": self.theta_o(batch)}
