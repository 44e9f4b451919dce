"""``clip``: the text tower of an open_clip model, weights from a local file (or a fetched ``url``).

``model`` names the architecture (an open_clip built-in such as ``ViT-B-32``, or the file stem of a JSON config
given as ``model_config``); the weight file is a full open_clip checkpoint for it (a state dict, ``.safetensors``, or an OpenAI
TorchScript archive such as ``ViT-B-32.pt``, whose architecture is ``ViT-B-32-quickgelu``). Each class text is
put into every prompt template; the embeddings of one template are L2-normalised, averaged over the templates and
normalised again (one template: just its normalised embedding).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from extractors.params import integer, local_file, string, strings
from extractors.text_encoders.model_files import model_file
from extractors.text_encoders.registry import FILE_PARAMS, TextEncoderError, register

DEFAULT_TEMPLATES = ("a video of {}.",)


@register("clip", params={**FILE_PARAMS, "model": string("ViT-B-32"), "model_config": local_file(),
                          "templates": strings(list(DEFAULT_TEMPLATES), containing="{}"), "device": string("cpu"),
                          "batch_size": integer(64, minimum=1)})
def _clip(texts: list[str], cfg: dict, report: dict) -> np.ndarray:
    templates = [cfg["templates"]] if isinstance(cfg["templates"], str) else list(cfg["templates"])
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise TextEncoderError(f"text.clip.templates: every template needs '{{}}' for the class text: {templates}")
    path = model_file(cfg, "clip")
    if not texts:
        return np.zeros((0, 1), np.float32)
    import open_clip
    import torch

    if cfg.get("model_config"):
        open_clip.add_model_config(cfg["model_config"])
    if cfg["model"] not in open_clip.list_models():
        raise TextEncoderError(f"text.clip.model: unknown open_clip architecture {cfg['model']!r} (a custom one "
                               "needs text.clip.model_config, a JSON file named <model>.json)")
    device = cfg["device"]
    # OpenAI's released files are TorchScript archives, which torch.load refuses with weights_only
    model = open_clip.create_model(cfg["model"], pretrained=str(path), device=device,
                                   weights_only=not _is_torchscript(path))
    model.eval()
    tokenizer = open_clip.get_tokenizer(cfg["model"])
    batch = int(cfg["batch_size"])
    total = None
    with torch.no_grad():
        for template in templates:
            prompts = [template.format(t) for t in texts]
            parts = [model.encode_text(tokenizer(prompts[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, len(prompts), batch)]
            emb = torch.nn.functional.normalize(torch.cat(parts), dim=-1)
            total = emb if total is None else total + emb
    report["templates"] = templates
    return (total / len(templates)).numpy()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
