"""Seeded per-second audio-visual features at the official benchmark sizes (UCF, ActivityNet, VGGSound "main").

A harder stand-in for real features than ``bench.train_throughput.make_ucf_like`` (whose classes are far apart
Gaussian blobs): every class has a low-dimensional semantic code z_c; its text embedding and its audio and video
signals are different fixed linear maps of z_c (so an unseen class's signal is predictable from its text through maps
learnt on seen classes), and each video adds a per-video nuisance, stronger than the class signal and lying in the
same feature subspace, per-second noise, and seconds without class signal; audio is weaker and more often silent.
The model, its equations and its defaults: docs/synthetic-benchmark.md.

    python -m bench.synthetic_features --dataset UCF --out data/synthetic-ucf
    python -m bench.synthetic_features --dataset UCF --out small --scale 0.1 --dim 64 --nuisance 3
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bench.benchmark_sizes import SIZES
from extractors.feature_store import StoreSpec, VideoFeatures, write_store
from extractors.splits import Splits, write_splits
from extractors.text_store import write_text_store

MODALITIES = ("audio", "video")
# which classes each scored or trained stage holds: the official layout (extractors/splits.py validates it)
STAGE_GROUPS = {"stage_1_train": ("train",), "stage_1_val_seen": ("train",), "stage_1_val_unseen": ("val_unseen",),
                "stage_2_test_seen": ("train", "val_unseen"), "stage_2_test_unseen": ("test_unseen",)}
# seconds per video (uniform integers, inclusive): UCF clips are short, ActivityNet videos minutes long
SECONDS = {"UCF": (4, 10), "ActivityNet": (10, 120), "VGGSound": (10, 10)}


@dataclass(frozen=True)
class Knobs:
    """Every parameter of the generative model (docs/synthetic-benchmark.md). Scales are per-coordinate RMS."""

    latent_dim: int = 16  # L: size of the semantic code z_c shared by text, audio and video
    subspace_dim: int = 64  # k: the feature subspace that holds both class signals and the nuisance
    class_specific: float = 0.8  # ρ: part of a class's signal not predictable from its text (relative to 1)
    text_noise: float = 0.3  # text embedding noise (relative to the norm of the text's semantic part)
    video_signal: float = 1.0  # s_v: class-signal scale of video seconds
    audio_signal: float = 0.7  # s_a: class-signal scale of audio seconds (weaker)
    nuisance: float = 2.0  # n: per-video offset shared by all seconds of a video (stronger than the signals)
    noise: float = 2.0  # e: per-second noise
    offset: float = 1.0  # common mean of every feature, per modality
    video_off: float = 0.25  # fraction of video seconds without class signal
    audio_off: float = 0.35  # fraction of audio seconds without class signal
    audio_mute_videos: float = 0.15  # fraction of videos whose whole audio track carries no class signal
    min_seconds: int | None = None  # None: the dataset's range (SECONDS)
    max_seconds: int | None = None  # cap, e.g. 60 for ActivityNet (full size: 2.9 GB of sequences instead of 5.4)
    rectify: bool = False  # max(x, 0), like post-ReLU pooled CNN features (breaks the exact linear structure)

    def check(self, dim: int, text_dim: int) -> None:
        if not 1 <= self.latent_dim <= min(self.subspace_dim, text_dim) or self.subspace_dim > dim:
            raise ValueError(f"need 1 <= latent_dim ({self.latent_dim}) <= subspace_dim ({self.subspace_dim}) <= dim "
                             f"({dim}) and latent_dim <= text_dim ({text_dim})")
        for name in ("video_off", "audio_off", "audio_mute_videos"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a fraction in [0, 1]")

    def seconds(self, dataset: str) -> tuple[int, int]:
        lo, hi = SECONDS[dataset]
        lo = self.min_seconds or lo
        hi = min(hi, self.max_seconds or hi)
        if not 1 <= lo <= hi:
            lo = hi
        return lo, hi


def dataset_name(name: str) -> str:
    """The table's spelling of ``name`` (case-insensitive)."""
    match = [d for d in SIZES if d.lower() == name.lower()]
    if not match:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SIZES)}")
    return match[0]


# ------------------------------------------------------------------------------------------------ sizes
def class_groups(dataset: str) -> dict[str, list[str]]:
    """Class names per group: train, val_unseen, test_unseen, then unused (listed in all_class.txt only)."""
    sizes = SIZES[dataset_name(dataset)]
    n = {"train": len(sizes.per_class["stage_1_train"]), "val_unseen": len(sizes.per_class["stage_1_val_unseen"]),
         "test_unseen": len(sizes.per_class["stage_2_test_unseen"])}
    n["unused"] = sizes.n_all_classes - sum(n.values())
    width = max(2, len(str(sizes.n_all_classes - 1)))
    names = iter(f"class{i:0{width}d}" for i in range(sizes.n_all_classes))
    return {g: [next(names) for _ in range(k)] for g, k in n.items()}


def stage_counts(dataset: str, scale: float = 1.0) -> dict[str, dict[str, int]]:
    """Videos per class in every trained or scored stage; ``scale`` shrinks each count (at least 2 remain). Pure."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    dataset = dataset_name(dataset)
    groups = class_groups(dataset)
    out = {}
    for stage, gs in STAGE_GROUPS.items():
        names = [c for g in gs for c in groups[g]]
        counts = SIZES[dataset].per_class[stage]
        out[stage] = {c: max(2, round(n * scale)) for c, n in zip(names, counts, strict=True)}
    return out


def stage_sizes(dataset: str, scale: float = 1.0) -> dict[str, tuple[int, int]]:
    """(classes, videos) per stage, the shape of ``bench.train_throughput.UCF``."""
    return {s: (len(c), sum(c.values())) for s, c in stage_counts(dataset, scale).items()}


def benchmark_splits(dataset: str, scale: float = 1.0) -> Splits:
    """The split structure (classes and video ids per stage) at ``scale``, validated as extractors/splits.py does;
    stage_2_train = stage_1_train + stage_1_val_seen + stage_1_val_unseen, as in the official files. Pure."""
    dataset = dataset_name(dataset)
    groups = class_groups(dataset)
    videos = {}
    for stage, per_class in stage_counts(dataset, scale).items():
        labels = [c for c, n in per_class.items() for _ in range(n)]
        videos[stage] = [(f"{stage}_{i:06d}", c) for i, c in enumerate(labels)]
    videos["stage_2_train"] = videos["stage_1_train"] + videos["stage_1_val_seen"] + videos["stage_1_val_unseen"]
    classes = {s: [c for g in gs for c in groups[g]] for s, gs in STAGE_GROUPS.items()}
    classes["stage_2_train"] = groups["train"] + groups["val_unseen"]
    splits = Splits([c for g in groups.values() for c in g], classes, videos, source=f"synthetic {dataset}")
    splits.validate()
    return splits


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class World:
    """The class-level draw of one seed: text embeddings, class signals, feature subspaces and common means."""

    text: np.ndarray  # (C, text_dim), unit rows
    signal: dict[str, np.ndarray]  # modality -> (C, dim): u_c, per-coordinate RMS 1 on average
    basis: dict[str, np.ndarray]  # modality -> (dim, k): G, orthonormal columns
    bias: dict[str, np.ndarray]  # modality -> (dim,): b


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


def make_world(n_classes: int, dim: int, text_dim: int, knobs: Knobs, seed: int) -> World:
    """t_c = unit(T z_c + σ_t ε_c);  u_c^m = √dim · G_m (A_m z_c + ρ r_c^m) / √(1 + ρ²);  z_c ~ N(0, I/L)."""
    rng = np.random.default_rng([seed, 0])
    L = knobs.latent_dim
    z = rng.standard_normal((n_classes, L)) / math.sqrt(L)
    text = z @ _orthonormal(rng, text_dim, L).T
    text += knobs.text_noise * rng.standard_normal((n_classes, text_dim)) / math.sqrt(text_dim)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    signal, basis, bias = modality_signals(rng, z, dim, knobs)
    return World(text.astype(np.float32), signal, basis, bias)


def modality_signals(rng: np.random.Generator, z: np.ndarray, dim: int, knobs) -> tuple[dict, dict, dict]:
    """Per modality, from the latent codes ``z`` (one row per class or motif): the signal each row puts in the
    modality's ``knobs.subspace_dim``-dimensional subspace (float32, (rows, dim)), that subspace's basis, and the
    modality's constant offset (float32, (dim,))."""
    L, k = knobs.latent_dim, knobs.subspace_dim
    signal, basis, bias = {}, {}, {}
    for m in MODALITIES:
        basis[m] = _orthonormal(rng, dim, k)
        own = rng.standard_normal((len(z), k)) / math.sqrt(k)
        h = (z @ _orthonormal(rng, k, L).T + knobs.class_specific * own) / math.sqrt(1 + knobs.class_specific ** 2)
        signal[m] = (math.sqrt(dim) * h @ basis[m].T).astype(np.float32)
        bias[m] = (knobs.offset * rng.standard_normal(dim)).astype(np.float32)
    return signal, basis, bias


def make_video(world: World, knobs: Knobs, rng: np.random.Generator, cls: int, seconds: int) -> dict[str, np.ndarray]:
    """x_t^m = b^m + s_m g_t^m u_c^m + n √dim G_m w^m + e ε_t^m, with g_t^m ∈ {0, 1} (class signal on or off)."""
    out = {}
    for m in MODALITIES:
        dim, k = world.basis[m].shape
        strength, off = (knobs.video_signal, knobs.video_off) if m == "video" else (knobs.audio_signal, knobs.audio_off)
        on = rng.random(seconds) >= off
        if m == "audio" and rng.random() < knobs.audio_mute_videos:
            on[:] = False
        w = rng.standard_normal(k) / math.sqrt(k)
        shared = world.bias[m] + (knobs.nuisance * math.sqrt(dim)) * (world.basis[m] @ w).astype(np.float32)
        x = knobs.noise * rng.standard_normal((seconds, dim), dtype=np.float32)
        x += shared + (strength * on.astype(np.float32))[:, None] * world.signal[m][cls]
        out[m] = np.maximum(x, 0) if knobs.rectify else x
    return out


@dataclass
class Benchmark:
    videos: list[VideoFeatures]
    splits: Splits
    text: np.ndarray  # (len(splits.all_classes), text_dim), rows in all_classes order
    config: dict


def generate(dataset: str = "UCF", seed: int = 0, dim: int = 512, text_dim: int = 300, scale: float = 1.0,
             **knobs) -> Benchmark:
    """The whole benchmark in memory; the same arguments give the same arrays, bit for bit."""
    dataset = dataset_name(dataset)
    kn = Knobs(**knobs)
    kn.check(dim, text_dim)
    splits = benchmark_splits(dataset, scale)
    world = make_world(len(splits.all_classes), dim, text_dim, kn, seed)
    rng = np.random.default_rng([seed, 1])
    lo, hi = kn.seconds(dataset)
    videos = []
    for stage in STAGE_GROUPS:
        for vid, c in splits.videos[stage]:
            seq = make_video(world, kn, rng, splits.class_id(c), int(rng.integers(lo, hi + 1)))
            videos.append(VideoFeatures(vid, c, audio_seq=seq["audio"], video_seq=seq["video"]))
    config = {"dataset": dataset, "seed": seed, "dim": dim, "text_dim": text_dim, "scale": scale, **asdict(kn)}
    return Benchmark(videos, splits, world.text, config)


def make_benchmark(root: Path, dataset: str = "UCF", seed: int = 0, dim: int = 512, text_dim: int = 300,
                   scale: float = 1.0, **knobs) -> dict:
    """Write features.h5, splits/ and text.h5 under ``root``; returns their paths (as ``make_ucf_like`` does)."""
    return write_benchmark(root, generate(dataset, seed, dim, text_dim, scale, **knobs), "synthetic-benchmark")


def write_benchmark(root: Path, b, extractor: str) -> dict:
    """A generated benchmark (``videos``, ``splits``, ``text``, ``config``) as features.h5, splits/ and text.h5
    under ``root``, recorded as made by ``extractor``; returns their paths."""
    root = Path(root)
    spec = StoreSpec(audio_dim=b.config["dim"], video_dim=b.config["dim"], has_sequences=True, extractor=extractor,
                     extractor_config=b.config)
    write_store(root / "features.h5", spec, b.videos)
    write_splits(root / "splits", b.splits)
    names = b.splits.all_classes
    write_text_store(root / "text.h5", names, names, b.text, extractor, b.config)
    return {"features": str(root / "features.h5"), "splits": str(root / "splits"), "text": str(root / "text.h5")}


# ------------------------------------------------------------------------------------------------ command line
def command_line(description: str, make, knobs: type, argv: list[str] | None = None) -> None:
    """The command line of a generator: ``make`` (its make_benchmark) with the standard options and ``knobs``'s."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="UCF", help=f"one of {', '.join(SIZES)}")
    ap.add_argument("--out", required=True, help="folder for features.h5, splits/ and text.h5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=512, help="audio and video feature width")
    ap.add_argument("--text-dim", type=int, default=300)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink every per-class count (at least 2 remain)")
    for f in fields(knobs):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default) if f.default is not None else int, default=f.default)
    args = vars(ap.parse_args(argv))
    out = Path(args.pop("out"))
    paths = make(out, **args)
    print(json.dumps(paths))
    for stage, (n_classes, n_videos) in stage_sizes(args["dataset"], args["scale"]).items():
        print(f"{stage}: {n_classes} classes, {n_videos} videos")


def main(argv: list[str] | None = None) -> None:
    command_line(__doc__, make_benchmark, Knobs, argv)


if __name__ == "__main__":
    main()
