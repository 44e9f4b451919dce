"""Seeded per-second audio-visual features in which a class is an order of events: the second synthetic benchmark.

Designed unlike ``bench.synthetic_features`` (a class signal spread over most seconds, readable from the per-video
mean): there are a few "motifs" (short events, each with a semantic code), and a class is an ordered pair of them,
"motif a, then motif b". A video shows its two motifs for a few seconds each, back to back, at a position that varies
from video to video; every other second is background (per-video nuisance and noise). Class (a, b) and class (b, a)
have the same per-video mean in expectation, so only a model that reads the order can tell them apart. A class's
text is built from its motifs' codes, a different fixed map for each role (first, then), so an unseen ordered pair of
seen motifs is predictable from its text. In a share of the clips the audio is silent (the features of silence, the
same for every clip, with small noise). The model, its equations and its defaults: docs/synthetic-benchmark.md.

    python -m bench.sequence_features --dataset UCF --out data/sequence-ucf
    python -m bench.sequence_features --dataset UCF --out small --scale 0.1 --dim 64 --audio-absent 0.5
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.synthetic_features import (
    MODALITIES,
    SECONDS,
    STAGE_GROUPS,
    _orthonormal,
    benchmark_splits,
    command_line,
    dataset_name,
    modality_signals,
    write_benchmark,
)
from extractors.feature_store import VideoFeatures

EXTRACTOR = "sequence-benchmark"


@dataclass(frozen=True)
class Knobs:
    """Every parameter of the generative model (docs/synthetic-benchmark.md). Scales are per-coordinate RMS."""

    motifs: int | None = None  # M: number of motifs; None: the fewest whose ordered pairs name every class
    motif_seconds: int = 2  # seconds each motif lasts (shortened to half the clip for shorter clips)
    latent_dim: int = 16  # L: size of a motif's semantic code
    subspace_dim: int = 64  # k: the feature subspace of the motif signals and the nuisance
    class_specific: float = 0.5  # ρ: part of a motif's signal not predictable from its code (relative to 1)
    text_noise: float = 0.3  # text embedding noise (relative to the norm of the text's semantic part)
    video_signal: float = 2.0  # s_v: motif-signal scale of video seconds
    audio_signal: float = 1.4  # s_a: motif-signal scale of audio seconds
    nuisance: float = 2.0  # n: per-video offset shared by all seconds of a video
    noise: float = 2.0  # e: per-second noise
    offset: float = 1.0  # common mean of every feature, per modality
    audio_absent: float = 0.25  # share of clips whose audio is silence (no motif, no nuisance)
    silence_noise: float = 0.1  # per-second noise of silent audio, relative to e
    min_seconds: int | None = None  # None: the dataset's range (SECONDS); at least 2
    max_seconds: int | None = None

    def check(self, dim: int, text_dim: int, n_classes: int, n_train: int) -> None:
        if not 1 <= self.latent_dim <= min(self.subspace_dim, text_dim) or self.subspace_dim > dim:
            raise ValueError(f"need 1 <= latent_dim ({self.latent_dim}) <= subspace_dim ({self.subspace_dim}) <= dim "
                             f"({dim}) and latent_dim <= text_dim ({text_dim})")
        m = self.n_motifs(n_classes)
        if m * (m - 1) < n_classes:
            raise ValueError(f"{m} motifs give {m * (m - 1)} ordered pairs, fewer than the {n_classes} classes")
        if m > n_train:
            raise ValueError(f"{m} motifs need at least {m} training classes to be seen in both roles; "
                             f"there are {n_train}")
        if self.motif_seconds < 1:
            raise ValueError("motif_seconds must be at least 1")
        if not 0 <= self.audio_absent <= 1:
            raise ValueError("audio_absent must be a fraction in [0, 1]")

    def n_motifs(self, n_classes: int) -> int:
        return self.motifs or math.ceil((1 + math.sqrt(1 + 4 * n_classes)) / 2)

    def seconds(self, dataset: str) -> tuple[int, int]:
        lo, hi = SECONDS[dataset]
        lo = max(2, self.min_seconds or lo)
        hi = max(2, min(hi, self.max_seconds or hi))
        return min(lo, hi), hi


def class_pairs(n_motifs: int, n_classes: int, n_train: int, seed: int) -> np.ndarray:
    """(C, 2) motif indices (first, then) per class in all_classes order. The first ``n_motifs`` training classes
    are a cycle (π0, π1), (π1, π2), …, (π_{M−1}, π0) of a random permutation, so every motif is seen in both roles;
    the rest are the remaining ordered pairs, each next to its reverse, so that most classes share their motifs,
    reversed, with another class of the same group."""
    rng = np.random.default_rng([seed, 2])
    perm = rng.permutation(n_motifs)
    pairs = [(int(perm[i]), int(perm[(i + 1) % n_motifs])) for i in range(n_motifs)]
    used = set(pairs)
    unordered = [(a, b) for a in range(n_motifs) for b in range(a + 1, n_motifs)]
    for i in rng.permutation(len(unordered)):
        a, b = unordered[i]
        for p in ((a, b), (b, a)) if rng.random() < 0.5 else ((b, a), (a, b)):
            if p not in used:
                pairs.append(p)
                used.add(p)
    return np.array(pairs[:n_classes], dtype=np.int64)


# ------------------------------------------------------------------------------------------------ the model
@dataclass
class World:
    """The class-level draw of one seed: motif signals, class texts, feature subspaces, means and silence."""

    pairs: np.ndarray  # (C, 2): class c is motif pairs[c, 0], then motif pairs[c, 1]
    text: np.ndarray  # (C, text_dim), unit rows
    signal: dict[str, np.ndarray]  # modality -> (M, dim): the motif signals
    basis: dict[str, np.ndarray]  # modality -> (dim, k)
    bias: dict[str, np.ndarray]  # modality -> (dim,)
    silence: np.ndarray  # (dim,): the audio feature of a silent second


def make_world(n_classes: int, n_train: int, dim: int, text_dim: int, knobs: Knobs, seed: int) -> World:
    """t_c = unit(T₁ z_a + T₂ z_b + σ_t ε_c) for class c = (a, b);  u_j^m = √dim · G_m (A_m z_j + ρ r_j^m) / √(1 + ρ²)."""
    rng = np.random.default_rng([seed, 0])
    n_motifs, L = knobs.n_motifs(n_classes), knobs.latent_dim
    pairs = class_pairs(n_motifs, n_classes, n_train, seed)
    z = rng.standard_normal((n_motifs, L)) / math.sqrt(L)
    first, then = _orthonormal(rng, text_dim, L), _orthonormal(rng, text_dim, L)
    text = z[pairs[:, 0]] @ first.T + z[pairs[:, 1]] @ then.T
    text += knobs.text_noise * math.sqrt(2) * rng.standard_normal((n_classes, text_dim)) / math.sqrt(text_dim)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    signal, basis, bias = modality_signals(rng, z, dim, knobs)
    silence = (knobs.offset * rng.standard_normal(dim)).astype(np.float32)
    return World(pairs, text.astype(np.float32), signal, basis, bias, silence)


@dataclass(frozen=True)
class Event:
    """Where a video's class evidence is: seconds start .. start + 2·length − 1, motif a then motif b."""

    start: int
    length: int  # seconds per motif
    audio_silent: bool


def motif_track(event: Event, pair: np.ndarray, seconds: int) -> np.ndarray:
    """Motif index per second, −1 for background."""
    track = np.full(seconds, -1, dtype=np.int64)
    track[event.start:event.start + event.length] = pair[0]
    track[event.start + event.length:event.start + 2 * event.length] = pair[1]
    return track


def make_video(world: World, knobs: Knobs, rng: np.random.Generator, cls: int,
               seconds: int) -> tuple[dict[str, np.ndarray], Event]:
    """x_t^m = b^m + s_m u^m_{j(t)} [t in the event] + n √dim G_m w^m + e ε_t^m; silent audio: s + 0.1·e ε_t."""
    length = min(knobs.motif_seconds, seconds // 2)
    event = Event(int(rng.integers(0, seconds - 2 * length + 1)), length, bool(rng.random() < knobs.audio_absent))
    track = motif_track(event, world.pairs[cls], seconds)
    on = (track >= 0).astype(np.float32)[:, None]
    out = {}
    for m in MODALITIES:
        dim, k = world.basis[m].shape
        strength = knobs.video_signal if m == "video" else knobs.audio_signal
        w = rng.standard_normal(k) / math.sqrt(k)
        eps = rng.standard_normal((seconds, dim), dtype=np.float32)
        if m == "audio" and event.audio_silent:
            out[m] = world.silence + (knobs.silence_noise * knobs.noise) * eps
            continue
        shared = world.bias[m] + (knobs.nuisance * math.sqrt(dim)) * (world.basis[m] @ w).astype(np.float32)
        out[m] = shared + knobs.noise * eps + strength * on * world.signal[m][np.maximum(track, 0)]
    return out, event


@dataclass
class Benchmark:
    videos: list[VideoFeatures]
    splits: object  # extractors.splits.Splits
    text: np.ndarray  # (len(splits.all_classes), text_dim), rows in all_classes order
    config: dict
    pairs: np.ndarray  # (C, 2) motifs per class, all_classes order
    events: dict[str, Event]  # video id -> where its evidence is (for checks; not written)


def generate(dataset: str = "UCF", seed: int = 0, dim: int = 512, text_dim: int = 300, scale: float = 1.0,
             **knobs) -> Benchmark:
    """The whole benchmark in memory; the same arguments give the same arrays, bit for bit."""
    dataset = dataset_name(dataset)
    kn = Knobs(**knobs)
    splits = benchmark_splits(dataset, scale)
    n_classes, n_train = len(splits.all_classes), len(splits.classes["stage_1_train"])
    kn.check(dim, text_dim, n_classes, n_train)
    world = make_world(n_classes, n_train, dim, text_dim, kn, seed)
    rng = np.random.default_rng([seed, 1])
    lo, hi = kn.seconds(dataset)
    videos, events = [], {}
    for stage in STAGE_GROUPS:
        for vid, c in splits.videos[stage]:
            seq, events[vid] = make_video(world, kn, rng, splits.class_id(c), int(rng.integers(lo, hi + 1)))
            videos.append(VideoFeatures(vid, c, audio_seq=seq["audio"], video_seq=seq["video"]))
    config = {"generator": "sequence", "dataset": dataset, "seed": seed, "dim": dim, "text_dim": text_dim,
              "scale": scale, **asdict(kn), "motifs": kn.n_motifs(n_classes)}
    return Benchmark(videos, splits, world.text, config, world.pairs, events)


def make_benchmark(root: Path, dataset: str = "UCF", seed: int = 0, dim: int = 512, text_dim: int = 300,
                   scale: float = 1.0, **knobs) -> dict:
    """Write features.h5, splits/ and text.h5 under ``root``; returns their paths (as bench.synthetic_features)."""
    return write_benchmark(root, generate(dataset, seed, dim, text_dim, scale, **knobs), EXTRACTOR)


# ------------------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> None:
    command_line(__doc__, make_benchmark, Knobs, argv)


if __name__ == "__main__":
    main()
