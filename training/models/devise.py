"""DeViSE (Frome et al., NeurIPS 2013) on audio-visual features. Equations in docs/models/devise.md."""

from __future__ import annotations

from training.models import register
from training.models.bilinear import BilinearCompatibility


@register
class DeViSE(BilinearCompatibility):
    name = "devise"
    display_name = "DEVISE"
    paper = "Frome et al., DeViSE: A Deep Visual-Semantic Embedding Model, NeurIPS 2013"
    reduction = "sum"  # hinge rank loss: every violating class
