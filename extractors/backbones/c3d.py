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
from extractors.media.decode import MediaError
from extractors.params import choice, flag, integer, local_file, number

WHERE = ("get c3d.pickle (C3D trained on Sports-1M, from the c3d-pytorch repository, DavideA/c3d-pytorch, whose "
         "README links it)")
# per channel in the order the network sees them (B, G, R)
MEAN = (0.43216, 0.394666, 0.37645)
STD = (0.22803, 0.22145, 0.216989)
ORDERS = ("bgr", "rgb")
MODES = ("clean", "reference")


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
    declared_params = {"weights": local_file(), "mode": choice("clean", MODES), "channel_order": choice("bgr", ORDERS),
                       "colour_negative": flag(False), "fps": number(25.0, above=0),
                       "decode_short_side": integer(128, minimum=1, nullable=True)}
    DIM = 4096
    FRAMES = 16
    RESIZE = (128, 171)
    CROP = 112
    # what the reference mode fixes (the clean mode's parameters that it overrides)
    REFERENCE = {"channel_order": "bgr", "fps": 25.0, "decode_short_side": None}

    @classmethod
    def check_file(cls, param, path, name):
        if param == cls.weights_param:
            load_c3d(path)

    def __init__(self, weights, mode, channel_order, colour_negative, fps, decode_short_side):
        super().__init__(weights=weights, mode=mode, channel_order=channel_order, colour_negative=colour_negative,
                         fps=fps, decode_short_side=decode_short_side)
        if mode not in MODES:
            raise BackboneError(f"backbone 'c3d': mode must be one of {MODES}, got {mode!r}")
        if channel_order not in ORDERS:
            raise BackboneError(f"backbone 'c3d': channel_order must be one of {ORDERS}, got {channel_order!r}")
        self.reference = mode == "reference"
        if self.reference:
            given = {"channel_order": channel_order, "fps": fps, "decode_short_side": decode_short_side}
            for key, value in given.items():
                if value != self.default_params[key] and value != self.REFERENCE[key]:
                    raise BackboneError(f"backbone 'c3d': mode 'reference' fixes {key} to "
                                        f"{self.REFERENCE[key]!r}; remove {key} ({value!r}) or use mode 'clean'")
            channel_order, fps, decode_short_side = (self.REFERENCE[k] for k in ("channel_order", "fps",
                                                                                  "decode_short_side"))
            self.streamable = False  # the number of clips is the number of frames decoded
        self.net = load_c3d(require_weights("c3d", weights, WHERE))
        self.bgr = channel_order == "bgr"
        self.negative = bool(colour_negative)
        self.fps = float(fps)
        window = self.FRAMES / self.fps
        self.modalities = ("video",)
        self.specs = {"video": ModalitySpec(window, window, self.DIM)}
        # the decoder scales (aspect kept) to this short side first; None: full size, one resize to 128x171 here
        if self.reference:  # the fps=25 conversion, read back as OpenCV converts frames (bicubic chroma)
            self.input_format = InputFormat(fps=self.fps, frames="fps_filter", interpolation="BICUBIC")
        else:
            self.input_format = InputFormat(fps=self.fps,
                                            short_side=int(decode_short_side) if decode_short_side else None)

    def plan(self, modality, duration):
        """Every frame in a clip: ceil(frames / 16) clips, the last one cut at the end of the video."""
        return self._clips(max(1, math.ceil(duration * self.fps / self.FRAMES - 1e-6)), duration)

    def plan_clip(self, modality, clip):
        if not self.reference:
            return self.plan(modality, clip.duration)
        # the reference: clips from frame 0 every 16 frames while frames remain (range(0, frames, 16))
        n = math.ceil(clip.n_frames / self.FRAMES)
        if n == 0:
            raise MediaError("no video frames at 25 fps")
        return self._clips(n, clip.n_frames / self.fps)

    def _clips(self, n: int, duration: float) -> np.ndarray:
        spec = self.specs["video"]
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
        crops = reference_resize_crop(frames) if self.reference else resize_crop(frames, self.RESIZE,
                                                                                  (self.CROP, self.CROP))
        x = normalise(crops, self.bgr)
        return x * torch.from_numpy(real)[:, :, None, None, None]

    def embed(self, modality, x):
        return self.net(x.float().permute(0, 4, 1, 2, 3))


def reference_resize(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> uint8 (..., 128, 171, 3): Pillow's bilinear resize to exactly 128x171 (aspect
    ignored), as the reference's ``torchvision.transforms.Resize((128, 171))`` on a PIL image."""
    from PIL import Image

    h, w = C3D.RESIZE
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.empty((len(flat), h, w, 3), np.uint8)
    for i, f in enumerate(flat):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(f), "RGB").resize((w, h), Image.BILINEAR))
    return out.reshape(*frames.shape[:-3], h, w, 3)


def reference_resize_crop(frames: np.ndarray) -> torch.Tensor:
    """:func:`reference_resize`, then ``CenterCrop(112)``, whose offsets are round((128 - 112) / 2) = 8 and
    round((171 - 112) / 2) = 30."""
    h, w = C3D.RESIZE
    c = C3D.CROP
    top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
    return torch.from_numpy(np.ascontiguousarray(reference_resize(frames)[..., top:top + c, left:left + c, :]))


def normalise(frames: torch.Tensor, bgr: bool = True) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> float (..., H, W, 3): channels reordered to BGR (if ``bgr``), /255, minus the
    mean, over the std (both given in the network's channel order)."""
    x = frames.float() / 255.0
    if bgr:
        x = x.flip(-1)
    return (x - torch.tensor(MEAN)) / torch.tensor(STD)
