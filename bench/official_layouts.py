"""Random weights written in the official checkpoint layouts (SeLaVi's DDP training dict with its clustering heads,
C3D's legacy non-zip Sports-1M file, torchvggish's VGGish and its PCA parameters), for the loader tests and the
throughput benchmark: the real loaders read them exactly as they read the released files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from extractors.backbones.c3d import C3DNet
from extractors.backbones.selavi import SeLaViEncoders
from extractors.backbones.vggish import VGGishNet

SELAVI_CLUSTERS = 309  # VGGSound's classes: the size of each of SeLaVi's ten clustering heads


def selavi_state(seed: int = 0) -> dict:
    """The ``model`` entry of SeLaVi's ``selavi_vgg_sound.pth``: DDP-prefixed encoders plus the MLP heads."""
    torch.manual_seed(seed)
    state = {}
    for k, v in SeLaViEncoders().state_dict().items():
        m, rest = k.split(".", 1)
        state[f"module.{m}_network.base.{rest}"] = v
    for i in range(10):
        for m in ("v", "a"):
            state[f"module.mlp_{m}{i}.block_forward.0.weight"] = torch.randn(512, 512)
            state[f"module.mlp_{m}{i}.block_forward.0.bias"] = torch.randn(512)
            state[f"module.mlp_{m}{i}.block_forward.3.weight"] = torch.randn(SELAVI_CLUSTERS, 512)
    return state


def write_selavi(path: Path, state: dict) -> Path:
    torch.save({"epoch": 100, "dist": 1, "model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
                "selflabels": torch.randint(0, SELAVI_CLUSTERS, (50, 10)), "amp": None}, path)
    return path


def write_c3d(path: Path, seed: int = 1) -> Path:
    """A bare state dict with Sports-1M's 487-way fc8, in torch's legacy (non-zip) format as the released file."""
    torch.manual_seed(seed)
    c3d = C3DNet().state_dict()
    c3d["fc8.weight"], c3d["fc8.bias"] = torch.randn(487, 4096) * 0.01, torch.zeros(487)
    torch.save(c3d, path, _use_new_zipfile_serialization=False)
    return path


def write_vggish(folder: Path, seed: int = 2) -> dict[str, Path]:
    """torchvggish's ``vggish-10086976.pth`` (``embeddings.*``), the same weights under the ``fc.*`` naming of
    other ports, and ``vggish_pca_params.npz``."""
    torch.manual_seed(seed)
    vgg = VGGishNet().state_dict()
    out = {"vggish_embeddings": folder / "vggish-10086976.pth", "vggish_fc": folder / "pytorch_vggish.pth",
           "pca": folder / "vggish_pca_params.npz"}
    torch.save(vgg, out["vggish_embeddings"])
    torch.save({k.replace("embeddings.", "fc."): v for k, v in vgg.items()}, out["vggish_fc"])
    rng = np.random.default_rng(seed + 1)
    q, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    np.savez(out["pca"], pca_eigen_vectors=q, pca_means=rng.normal(size=128) * 0.1)
    return out
