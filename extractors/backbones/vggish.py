"""VGGish (AudioSet) embeddings, 128-d per 0.96-s example, audio only: the benchmark's "cls" audio features.

Weights: a PyTorch port's state dict, either naming (``features.*`` + ``fc.{0,2,4}`` as in the
audioset-vggish-tensorflow-to-pytorch port's ``pytorch_vggish.pth``, or ``features.*`` + ``embeddings.{0,2,4}`` as in
torchvggish). ``pca``: the released ``vggish_pca_params.npz`` (``pca_eigen_vectors`` 128x128, ``pca_means`` 128),
or a ``.pth`` holding the same two tensors.

Preprocessing as AudioSet's VGGish input code (docs/backbones.md): mono as the plain mean of the channels, 16 kHz,
25 ms periodic-Hann frames every 10 ms, magnitude of a 512-point FFT, 64 HTK-mel bands 125-7500 Hz (DC bin
excluded), log(mel + 0.01); 96 frames (0.96 s, read from 0.975 s of audio) per example, examples without overlap.
``embedding``: ``quantized`` (PCA, clip to [-2, 2], (x + 2) * 255 / 4 truncated to 0..255; the reference), ``pca``
(PCA only) or ``raw`` (the network's 128-d output).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from extractors.backbones.base import (
    Backbone,
    BackboneError,
    InputFormat,
    ModalitySpec,
    audio_windows,
    register,
    require_weights,
)
from extractors.checkpoints import CheckpointError, load_checkpoint, load_state_dict, load_strict
from extractors.media.decode import MediaError
from extractors.params import choice, flag, local_file, number

WHERE = ("get pytorch_vggish.pth from the audioset-vggish-tensorflow-to-pytorch port (tcvrick) or vggish-10086976.pth "
         "from torchvggish (harritaylor)")
WHERE_PCA = ("get vggish_pca_params.npz (AudioSet VGGish, from the tensorflow/models repository's research/audioset/vggish "
             "instructions), or set embedding: raw")
EMBEDDINGS = ("quantized", "pca", "raw")
ROUNDINGS = ("truncate", "round")
MODES = ("clean", "reference")
SAMPLE_RATE = 16000
WIN, HOP, N_FFT = 400, 160, 512  # 25 ms, 10 ms; FFT length: the next power of two
N_MELS, FMIN, FMAX = 64, 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
QUANT_MIN, QUANT_MAX = -2.0, 2.0


class VGGishNet(nn.Module):
    def __init__(self, final_relu: bool = True):
        super().__init__()
        layers, cin = [], 1
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        head = [nn.Linear(512 * 6 * 4, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 128)]
        self.embeddings = nn.Sequential(*head, *([nn.ReLU()] if final_relu else []))

    def forward(self, x):  # (B, 96, 64) log-mel -> (B, 128)
        x = self.features(x[:, None])
        return self.embeddings(x.permute(0, 2, 3, 1).flatten(1))  # flattened channels-last, as the ports do


def load_vggish(path, final_relu: bool = True) -> VGGishNet:
    state = load_state_dict(path)
    net = VGGishNet(final_relu)
    head = "fc." if any(k.startswith("fc.") for k in state) else "embeddings."
    load_strict(net, state, str(path), mapping={"features.": "features.", head: "embeddings."})
    return net


def load_pca(path, suffix: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvectors (128, 128), means (128,)) from the released .npz or a .pth with the same names; ``suffix``:
    the kind when the name does not say it (a file still being fetched)."""
    path = Path(path)
    if (suffix or path.suffix) == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    else:
        obj = load_checkpoint(path, numpy_arrays=True)
        data = {k: np.asarray(v) for k, v in obj.items() if isinstance(v, (torch.Tensor, np.ndarray))} \
            if isinstance(obj, dict) else {}
    if "pca_eigen_vectors" not in data or "pca_means" not in data:
        raise CheckpointError(f"{path}: expected arrays 'pca_eigen_vectors' and 'pca_means', found {sorted(data)}")
    vecs, means = np.asarray(data["pca_eigen_vectors"], np.float64), np.asarray(data["pca_means"], np.float64)
    if vecs.shape != (128, 128) or means.size != 128:
        raise CheckpointError(f"{path}: pca_eigen_vectors {vecs.shape} and pca_means {means.shape}, expected "
                              "(128, 128) and (128,)")
    return vecs, means.reshape(128)


def mel_matrix() -> np.ndarray:
    """(257, 64) HTK-mel triangles over the FFT bins; the DC bin gets no weight."""
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)

    bins = mel(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(mel(FMIN), mel(FMAX), N_MELS + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (bins[:, None] - lo) / (mid - lo)
    down = (hi - bins[:, None]) / (hi - mid)
    w = np.maximum(0.0, np.minimum(up, down))
    w[0] = 0.0
    return w


def log_mel(wav: np.ndarray, mel: np.ndarray) -> np.ndarray:
    """(..., samples) -> (..., frames, 64): frames = 1 + (samples - 400) // 160, no padding."""
    n = 1 + (wav.shape[-1] - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / WIN)  # periodic
    spec = np.abs(np.fft.rfft(np.asarray(wav, np.float64)[..., idx] * hann, N_FFT))
    return np.log(spec @ mel + LOG_OFFSET)


def postprocess(emb: torch.Tensor, vecs: torch.Tensor, means: torch.Tensor, quantize: bool = True,
                rounding: str = "truncate") -> torch.Tensor:
    """PCA (subtract the means, project on the eigenvectors); with ``quantize`` clip to [-2, 2] and map to the
    integers 0..255 (``truncate`` as AudioSet's uint8 cast, or ``round`` as torchvggish), returned as float."""
    x = (emb.double() - means) @ vecs.T
    if not quantize:
        return x.float()
    x = (x.clamp(QUANT_MIN, QUANT_MAX) - QUANT_MIN) * (255.0 / (QUANT_MAX - QUANT_MIN))
    return (torch.floor(x) if rounding == "truncate" else torch.round(x)).float()


@register
class VGGish(Backbone):
    name = "vggish"
    weights_param = "weights"
    declared_params = {"weights": local_file(), "pca": local_file(), "mode": choice("clean", MODES),
                       "embedding": choice("quantized", EMBEDDINGS), "rounding": choice("truncate", ROUNDINGS),
                       "final_relu": flag(True), "hop_seconds": number(None, above=0)}
    DIM = 128
    WINDOW = 0.96
    # what the reference mode fixes
    REFERENCE = {"embedding": "quantized", "rounding": "truncate", "final_relu": True, "hop_seconds": None}

    @classmethod
    def check_file(cls, param, path, name):
        if param == cls.weights_param:
            load_vggish(path)
        elif param == "pca":
            load_pca(path, Path(name).suffix)

    def __init__(self, weights, pca, mode, embedding, rounding, final_relu, hop_seconds):
        super().__init__(weights=weights, pca=pca, mode=mode, embedding=embedding, rounding=rounding,
                         final_relu=final_relu, hop_seconds=hop_seconds)
        if mode not in MODES:
            raise BackboneError(f"backbone 'vggish': mode must be one of {MODES}, got {mode!r}")
        if embedding not in EMBEDDINGS:
            raise BackboneError(f"backbone 'vggish': embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        if rounding not in ROUNDINGS:
            raise BackboneError(f"backbone 'vggish': rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.reference = mode == "reference"
        if self.reference:
            given = {"embedding": embedding, "rounding": rounding, "final_relu": final_relu,
                     "hop_seconds": hop_seconds}
            for key, value in given.items():
                if value != self.REFERENCE[key]:
                    raise BackboneError(f"backbone 'vggish': mode 'reference' fixes {key} to "
                                        f"{self.REFERENCE[key]!r}; remove {key} ({value!r}) or use mode 'clean'")
            # resampy resamples the whole track, and the examples are those of the whole track
            self.streamable = False
        self.rounding = rounding
        self.net = load_vggish(require_weights("vggish", weights, WHERE), bool(final_relu))
        self.embedding = embedding
        if embedding != "raw":
            vecs, means = load_pca(require_weights("vggish", pca, WHERE_PCA, param="pca"))
            self.register_buffer("pca_vecs", torch.from_numpy(vecs), persistent=False)
            self.register_buffer("pca_means", torch.from_numpy(means), persistent=False)
        self.modalities = ("audio",)
        self.specs = {"audio": ModalitySpec(self.WINDOW, float(hop_seconds or self.WINDOW), self.DIM)}
        if self.reference:
            self.input_format = InputFormat(sample_rate=SAMPLE_RATE, channels="mean", sample_format="s16",
                                            resampler="resampy")
        else:
            self.input_format = InputFormat(sample_rate=SAMPLE_RATE, channels="mean")
        self.mel = mel_matrix()
        # an example's 96 frames reach 15 ms past its 0.96 s
        self.read_seconds = ((EXAMPLE_FRAMES - 1) * HOP + WIN) / SAMPLE_RATE

    def plan_clip(self, modality, clip):
        if not self.reference:
            return self.plan(modality, clip.duration)
        # the reference frames the whole track: 1 + (S - 400) // 160 log-mel frames, 96 per example
        frames = 1 + (clip.n_samples - WIN) // HOP if clip.n_samples >= WIN else 0
        n = 1 + (frames - EXAMPLE_FRAMES) // EXAMPLE_FRAMES if frames >= EXAMPLE_FRAMES else 0
        if n == 0:
            raise MediaError(f"{clip.n_samples / SAMPLE_RATE:.3f} s of audio: shorter than one VGGish example "
                             f"({self.read_seconds} s), the reference gives no features")
        starts = np.arange(n) * self.WINDOW
        return np.stack([starts, starts + self.WINDOW], 1)

    def window_data(self, clip, modality, starts):
        wav = audio_windows(clip.audio, clip.sample_rate, starts, self.read_seconds, clip.sample_start)
        out = log_mel(wav, self.mel)
        assert out.shape[1] == EXAMPLE_FRAMES, out.shape
        return torch.from_numpy(out.astype(np.float32))

    def embed(self, modality, x):
        emb = self.net(x.float())
        if self.embedding == "raw":
            return emb
        return postprocess(emb, self.pca_vecs, self.pca_means, self.embedding == "quantized", self.rounding)
