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


def _he_normal(state: dict, gen: torch.Generator) -> dict:
    """He-normal weights (std sqrt(2 / fan_in)) for every convolution and linear layer, zero biases: activations keep
    their scale through the depth, as in a trained network (PyTorch's default init shrinks them layer by layer)."""
    out = {}
    for k, v in state.items():
        if k.endswith("weight") and v.dim() >= 2:
            out[k] = torch.randn(v.shape, generator=gen) * (2.0 / v[0].numel()) ** 0.5
        elif k.endswith("bias"):
            out[k] = torch.zeros_like(v)
        else:
            out[k] = v.clone()
    return out


def write_realistic_cls_weights(folder: Path, seed: int = 7) -> dict[str, Path]:
    """Seeded He-normal C3D (``c3d.pickle``, legacy format, with the 487-way fc8) and VGGish (``pytorch_vggish.pth``
    with ``fc.*`` keys, ``vggish-10086976.pth`` with ``embeddings.*``), and a VGGish PCA centred on the embeddings of
    seeded log-mel-like inputs (N(-2.75, 2.2), the range of real log-mel examples) and scaled so the projections have
    a standard deviation of 0.15 (real clips spread wider): unlike ``write_c3d``/``write_vggish`` the fc7 features and the quantised embeddings
    neither vanish nor saturate. Used for the reference fixtures (tools/reference_fixtures)."""
    gen = torch.Generator().manual_seed(seed)
    c3d = _he_normal(C3DNet().state_dict(), gen)
    c3d["fc8.weight"] = torch.randn(487, 4096, generator=gen) * (2.0 / 4096) ** 0.5
    c3d["fc8.bias"] = torch.zeros(487)
    out = {"c3d": folder / "c3d.pickle", "vggish_embeddings": folder / "vggish-10086976.pth",
           "vggish_fc": folder / "pytorch_vggish.pth", "pca": folder / "vggish_pca_params.npz"}
    torch.save(c3d, out["c3d"], _use_new_zipfile_serialization=False)
    net = VGGishNet()
    vgg = _he_normal(net.state_dict(), gen)
    net.load_state_dict(vgg)
    net.eval()
    with torch.no_grad():
        emb = net(torch.randn(64, 96, 64, generator=gen) * 2.2 - 2.75).double().numpy()
    torch.save(vgg, out["vggish_embeddings"])
    torch.save({k.replace("embeddings.", "fc."): v for k, v in vgg.items()}, out["vggish_fc"])
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    means = emb.mean(0)
    spread = float(((emb - means) @ q.T).std())
    np.savez(out["pca"], pca_eigen_vectors=q * (0.15 / spread), pca_means=means)
    return out
