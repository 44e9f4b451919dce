"""ALE: attribute label embedding (Akata et al., TPAMI 2016) on audio-visual features. Equations in docs/models/ale.md."""

from __future__ import annotations

from training.models import register
from training.models.bilinear import BilinearCompatibility


@register
class ALE(BilinearCompatibility):
    name = "ale"
    display_name = "ALE"
    paper = "Akata et al., Label-Embedding for Image Classification, TPAMI 2016"
    reduction = "weighted"  # weighted approximate ranking: violations times ℓ(r)/r
