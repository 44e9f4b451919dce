"""C3D (Sports-1M) fc7 features, 4096-d, video only: the benchmark's "cls" video features (audio: ``vggish``).

Weights: ``c3d.pickle``, the Sports-1M C3D of the c3d-pytorch port (a bare state dict in torch's legacy format;
read through :mod:`extractors.checkpoints`, tensors only). Preprocessing as AVCA's ``cls_feature_extraction``
(docs/backbones.md): frames at 25 fps in non-overlapping clips of 16 (0.64 s), the last one zero-padded after
normalisation; each frame resized to 128x171 (aspect ignored), centre crop 112, BGR channel order, /255, then the
Sports-1M mean and std per channel. ``colour_negative`` reproduces the UCF/VGGSound scripts' wrap-around (v ->
(-v) mod 256) with which the released features of those datasets were made.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    register,
    require_weights,
    resize_crop,
)
from extractors.checkpoints import load_state_dict, load_strict

WHERE = ("get c3d.pickle (C3D trained on Sports-1M, from the c3d-pytorch repository, DavideA/c3d-pytorch, whose "
         "README links it)")
# per channel in the order the network sees them (B, G, R)
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
ORDERS = ("bgr", "rgb")


class C3DNet(nn.Module):
    """The c3d-pytorch layout: conv1..conv5b, fc6, fc7 (fc8, the Sports-1M classifier, is not built)."""

    def __init__(self):
        super().__init__()
        chans = [("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
                 ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512)]
        for name, cin, cout in chans:
            setattr(self, name, nn.Conv3d(cin, cout, kernel_size=3, padding=1))
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6 = nn.Linear(8192, 4096)
        self.fc7 = nn.Linear(4096, 4096)

    def forward(self, x):  # (B, 3, 16, 112, 112) -> (B, 4096): fc7 after its ReLU
        r = torch.relu
        x = self.pool1(r(self.conv1(x)))
        x = self.pool(r(self.conv2(x)))
        x = self.pool(r(self.conv3b(r(self.conv3a(x)))))
        x = self.pool(r(self.conv4b(r(self.conv4a(x)))))
        x = self.pool5(r(self.conv5b(r(self.conv5a(x)))))
        x = r(self.fc6(x.flatten(1)))
        return r(self.fc7(x))


def load_c3d(path) -> C3DNet:
    net = C3DNet()
    load_strict(net, load_state_dict(path), str(path), drop=("fc8.",))
    return net


@register
class C3D(Backbone):
    name = "c3d"
    weights_param = "weights"
    default_params = {"weights": None, "channel_order": "bgr", "colour_negative": False, "fps": 25.0,
                      "decode_short_side": 128}
    DIM = 4096
    FRAMES = 16
    RESIZE = (128, 171)
    CROP = 112

    def __init__(self, weights, channel_order, colour_negative, fps, decode_short_side):
        super().__init__(weights=weights, channel_order=channel_order, colour_negative=colour_negative, fps=fps,
                         decode_short_side=decode_short_side)
        if channel_order not in ORDERS:
            raise BackboneError(f"backbone 'c3d': channel_order must be one of {ORDERS}, got {channel_order!r}")
        self.net = load_c3d(require_weights("c3d", weights, WHERE))
        self.bgr = channel_order == "bgr"
        self.negative = bool(colour_negative)
        self.fps = float(fps)
        window = self.FRAMES / self.fps
        self.modalities = ("video",)
        self.specs = {"video": ModalitySpec(window, window, self.DIM)}
        # the decoder scales (aspect kept) to this short side first; None: full size, one resize to 128x171 here
        self.input_format = InputFormat(fps=self.fps, short_side=int(decode_short_side) if decode_short_side else None)

    def plan(self, modality, duration):
        """Every frame in a clip: ceil(frames / 16) clips, the last one cut at the end of the video."""
        spec = self.specs[modality]
        n = max(1, math.ceil(duration * self.fps / self.FRAMES - 1e-6))
        starts = np.arange(n) * spec.hop_seconds
        return np.stack([starts, np.minimum(starts + spec.window_seconds, max(duration, 0.0))], 1)

    def window_data(self, clip, modality, starts):
        """(T, 16, 112, 112, 3) normalised float frames in the network's channel order; frames past the end of the
        video are zeros."""
        first = np.floor(np.asarray(starts) * clip.fps + 1e-6).astype(int)
        idx = first[:, None] + np.arange(self.FRAMES)[None, :] - clip.frame_start
        if len(idx) and idx.min() < 0:
            raise ValueError(f"a window starts before the decoded frames (frame {clip.frame_start})")
        real = idx < len(clip.frames)
        frames = clip.frames[np.clip(idx, 0, len(clip.frames) - 1)]
        if self.negative:
            frames = (256 - frames.astype(np.int16)) % 256
            frames = frames.astype(np.uint8)
        x = normalise(resize_crop(frames, self.RESIZE, (self.CROP, self.CROP)), self.bgr)
        return x * torch.from_numpy(real)[:, :, None, None, None]

    def embed(self, modality, x):
        return self.net(x.float().permute(0, 4, 1, 2, 3))


def normalise(frames: torch.Tensor, bgr: bool = True) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> float (..., H, W, 3): channels reordered to BGR (if ``bgr``), /255, minus the
    mean, over the std (both given in the network's channel order)."""
    x = frames.float() / 255.0
    if bgr:
        x = x.flip(-1)
    return (x - torch.tensor(MEAN)) / torch.tensor(STD)
