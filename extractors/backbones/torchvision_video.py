"""Any torchvision video classifier as a feature backbone: the features before its classifier.

``model`` is a builder of ``torchvision.models.video`` (r3d_18, r2plus1d_18, mc3_18, s3d, mvit_v1_b, mvit_v2_s,
swin3d_t/s/b). The weights are a local state-dict file (``weights``); torchvision's weight metadata (offline, in the
wheel) gives the preprocessing of ``weights_name`` (default ``DEFAULT``): resize, centre crop, mean and std; each can
be overridden. A window is ``frames_per_window`` consecutive frames at ``fps``.
"""

from __future__ import annotations

import torch
from torch import nn

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    frames_at,
    register,
    require_weights,
    resize_crop,
)
from extractors.params import integer, local_file, number, numbers, string


def strip_classifier(model: nn.Module) -> int:
    """Replace the classification layer by the identity; the dimension of the features it received."""
    if isinstance(getattr(model, "fc", None), nn.Linear):  # r3d_18, r2plus1d_18, mc3_18
        dim = model.fc.in_features
        model.fc = nn.Identity()
    elif isinstance(getattr(model, "head", None), nn.Linear):  # swin3d_*
        dim = model.head.in_features
        model.head = nn.Identity()
    elif isinstance(getattr(model, "head", None), nn.Sequential):  # mvit_*: Dropout, Linear
        dim = model.head[-1].in_features
        model.head = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Sequential):  # s3d: Dropout, Conv3d 1x1, then a mean
        dim = model.classifier[-1].in_channels
        model.classifier = nn.Identity()
    else:
        raise BackboneError(f"do not know where the classifier of {type(model).__name__} is")
    return dim


@register
class TorchvisionVideo(Backbone):
    name = "torchvision_video"
    weights_param = "weights"
    declared_params = {"model": string("r2plus1d_18"), "weights": local_file(), "weights_name": string("DEFAULT"),
                       "fps": number(15.0, above=0), "frames_per_window": integer(16, minimum=1),
                       "hop_seconds": number(None, above=0), "resize": numbers(above=0), "crop": numbers(above=0),
                       "mean": numbers(length=3), "std": numbers(length=3, above=0)}

    def __init__(self, model, weights, weights_name, fps, frames_per_window, hop_seconds, resize, crop, mean, std):
        super().__init__(model=model, weights=weights, weights_name=weights_name, fps=fps,
                         frames_per_window=frames_per_window, hop_seconds=hop_seconds, resize=resize, crop=crop,
                         mean=mean, std=std)
        import torchvision.models as tvm
        import torchvision.models.video as tvv

        known = tvm.list_models(module=tvv)
        if model not in known:
            raise BackboneError(f"backbone 'torchvision_video': unknown model {model!r} (parameter 'model'); "
                                f"known: {known}")
        enum = tvm.get_model_weights(model)
        try:
            meta_weights = enum[weights_name] if weights_name != "DEFAULT" else enum.DEFAULT
        except KeyError:
            raise BackboneError(f"backbone 'torchvision_video': {model} has no weights {weights_name!r} (parameter "
                                f"'weights_name'); known: {[w.name for w in enum]}") from None
        path = require_weights("torchvision_video", weights,
                               f"download {meta_weights.url} (torchvision's {model} {meta_weights.name} weights)")
        tf = meta_weights.transforms()
        self.resize = list(resize or tf.resize_size)
        self.crop = list(crop or tf.crop_size)
        self.register_buffer("mean", torch.tensor(mean or tf.mean, dtype=torch.float32).view(1, 3, 1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std or tf.std, dtype=torch.float32).view(1, 3, 1, 1, 1),
                             persistent=False)
        self.categories = list(meta_weights.meta.get("categories", []))
        net = tvm.get_model(model, weights=None)
        dim = strip_classifier(net)
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneError(f"backbone 'torchvision_video': {path} does not fit {model}: missing keys "
                                f"{missing[:5]}, unexpected keys {unexpected[:5]}")
        self.net = net
        self.frames_per_window = int(frames_per_window)
        window = self.frames_per_window / float(fps)
        self.modalities = ("video",)
        self.specs = {"video": ModalitySpec(window, hop_seconds or window, dim)}
        short = self.resize[0] if len(self.resize) == 1 else min(self.resize)
        self.input_format = InputFormat(fps=float(fps), short_side=int(short))

    def window_data(self, clip, modality, starts):
        return resize_crop(frames_at(clip, starts, self.frames_per_window), self.resize, self.crop)

    def embed(self, modality, x):
        x = x.permute(0, 4, 1, 2, 3).float() / 255.0  # (B, 3, T, H, W)
        return self.net((x - self.mean) / self.std).flatten(1)
