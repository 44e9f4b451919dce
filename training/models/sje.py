"""SJE: structured joint embedding (Akata et al., CVPR 2015) on audio-visual features. Equations in docs/models/sje.md."""

from __future__ import annotations

from training.models import register
from training.models.bilinear import BilinearCompatibility


@register
class SJE(BilinearCompatibility):
    name = "sje"
    display_name = "SJE"
    paper = "Akata et al., Evaluation of Output Embeddings for Fine-Grained Image Classification, CVPR 2015"
    reduction = "max"  # structured SVM: only the most violating class
