"""An open_clip image encoder applied frame by frame; a window's feature is the mean over its frames.

Optional dependency (``pip install avzsl[clip]`` or ``pip install open_clip_torch``). ``model`` is an open_clip
model name (``ViT-B-32``, ...), or one defined by a JSON file given as ``model_config`` (open_clip's model-config
format, registered under the file's stem). ``weights`` is a local checkpoint (open_clip's ``pretrained=<file>``).
Image size, mean and std come from the model's preprocessing configuration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    frame_windows,
    register,
    require_weights,
    resize_crop,
)
from extractors.params import flag, integer, local_file, number, string


@register
class OpenClipImage(Backbone):
    name = "open_clip_image"
    weights_param = "weights"
    declared_params = {"model": string("ViT-B-32"), "model_config": local_file(), "weights": local_file(),
                       "window_seconds": number(1.0, above=0), "hop_seconds": number(None, above=0),
                       "frames_per_window": integer(4, minimum=1), "normalize": flag(True)}

    def __init__(self, model, model_config, weights, window_seconds, hop_seconds, frames_per_window, normalize):
        super().__init__(model=model, model_config=model_config, weights=weights, window_seconds=window_seconds,
                         hop_seconds=hop_seconds, frames_per_window=frames_per_window, normalize=normalize)
        try:
            import open_clip
        except ImportError:
            raise BackboneError("backbone 'open_clip_image' needs open_clip_torch: pip install 'avzsl[clip]' (or "
                                "pip install open_clip_torch)") from None
        if model_config:
            cfg = Path(model_config)
            if not cfg.is_file():
                raise BackboneError(f"backbone 'open_clip_image': model_config not found: {cfg}")
            open_clip.add_model_config(cfg)
            model = cfg.stem
        if model not in open_clip.list_models():
            raise BackboneError(f"backbone 'open_clip_image': unknown model {model!r} (parameter 'model'); see "
                                "open_clip.list_models(), or define one with 'model_config'")
        path = require_weights("open_clip_image", weights, "download the checkpoint of an open_clip model (e.g. "
                               "open_clip.list_pretrained(); the Hugging Face hub's open_clip_pytorch_model.bin)")
        net = open_clip.create_model(model, pretrained=str(path), device="cpu")
        self.visual = net.visual
        cfg = getattr(self.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(self.visual, "image_size", 224))
        self.size = [size, size] if isinstance(size, int) else list(size)
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.normalize = bool(normalize)
        self.frames_per_window = int(frames_per_window)
        self.window = float(window_seconds)
        dim = int(getattr(self.visual, "output_dim", None) or net.text_projection.shape[-1])
        self.modalities = ("video",)
        self.specs = {"video": ModalitySpec(self.window, float(hop_seconds or self.window), dim)}
        self.input_format = InputFormat(fps=self.frames_per_window / self.window, short_side=min(self.size))

    def window_data(self, clip, modality, starts):
        frames = frame_windows(clip.frames, clip.fps, np.asarray(starts), self.window, self.frames_per_window,
                               clip.frame_start)
        return resize_crop(frames, [min(self.size)], self.size)

    def embed(self, modality, x):
        b, t = x.shape[:2]
        img = x.flatten(0, 1).permute(0, 3, 1, 2).float() / 255.0
        f = self.visual((img - self.mean) / self.std).reshape(b, t, -1)
        if self.normalize:
            f = torch.nn.functional.normalize(f, dim=-1)
        return f.mean(1)
