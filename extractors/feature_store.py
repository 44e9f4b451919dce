"""The feature store: the one module that reads and writes avzsl's HDF5 feature files.

Layout (``format = "avzsl-features"``, ``format_version = 1``)::

    /                      attrs: format, format_version, extractor, extractor_config (JSON), config_hash,
                                  code_version, created, has_sequences, plus free-form provenance
    /videos/id             (N,)    utf-8   video id (unique)
    /videos/label          (N,)    utf-8   class name, as in the split files
    /<m>/mean              (N, D)  float32 mean over the video's steps          m in {audio, video}
    /<m>/seq               (S, D)  float32 all steps of all videos, concatenated (only if has_sequences)
    /<m>/offsets           (N+1,)  int64   steps of video i are seq[offsets[i]:offsets[i+1]]
                           attrs:  dim, step_seconds
    /failed/id, /failed/reason     media that could not be processed, and why

Sequences are ragged and stored flat so that a VGGSound-size store loads with a handful of reads.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from avzsl.common import atomic_path, code_version, quarantine

FORMAT = "avzsl-features"
FORMAT_VERSION = 1
MODALITIES = ("audio", "video")
_STR = h5py.string_dtype("utf-8")


class FeatureStoreError(ValueError):
    pass


@dataclass
class VideoFeatures:
    """Features of one video. ``*_seq`` are (T, D) per-step features; means are derived when absent."""

    video_id: str
    label: str
    audio_seq: np.ndarray | None = None
    video_seq: np.ndarray | None = None
    audio_mean: np.ndarray | None = None
    video_mean: np.ndarray | None = None

    def seq(self, modality: str) -> np.ndarray | None:
        return getattr(self, f"{modality}_seq")

    def mean(self, modality: str) -> np.ndarray:
        m = getattr(self, f"{modality}_mean")
        if m is None:
            s = self.seq(modality)
            if s is None or len(s) == 0:
                raise FeatureStoreError(f"{self.video_id}: no {modality} features")
            m = s.mean(axis=0)
        return np.asarray(m, dtype=np.float32)


@dataclass
class StoreSpec:
    """What a store holds: dimensions, whether per-step sequences are kept, and provenance."""

    audio_dim: int
    video_dim: int
    has_sequences: bool
    extractor: str
    extractor_config: dict = field(default_factory=dict)
    config_hash: str = ""
    audio_step_seconds: float = 1.0
    video_step_seconds: float = 1.0
    extra_attrs: dict = field(default_factory=dict)

    def dim(self, modality: str) -> int:
        return self.audio_dim if modality == "audio" else self.video_dim

    def step_seconds(self, modality: str) -> float:
        return self.audio_step_seconds if modality == "audio" else self.video_step_seconds


def write_store(path: str | Path, spec: StoreSpec, videos: Iterable[VideoFeatures],
                failures: Iterable[tuple[str, str]] = ()) -> int:
    """Write a complete store atomically. Returns the number of videos written."""
    videos = list(videos)
    ids = [v.video_id for v in videos]
    dup = _duplicates(ids)
    if dup:
        raise FeatureStoreError(f"duplicate video ids in feature store {path}: {dup[:5]}")
    with atomic_path(path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        _write_attrs(f, spec)
        g = f.create_group("videos")
        g.create_dataset("id", data=np.array(ids, dtype=object), dtype=_STR)
        g.create_dataset("label", data=np.array([v.label for v in videos], dtype=object), dtype=_STR)
        for m in MODALITIES:
            d = spec.dim(m)
            mg = f.create_group(m)
            mg.attrs["dim"] = d
            mg.attrs["step_seconds"] = spec.step_seconds(m)
            means = np.zeros((len(videos), d), np.float32)
            lengths = np.zeros(len(videos), np.int64)
            for i, v in enumerate(videos):
                means[i] = _check_dim(v.mean(m), d, v.video_id, m)
                if spec.has_sequences:
                    s = v.seq(m)
                    if s is None:
                        raise FeatureStoreError(f"{v.video_id}: store keeps sequences but {m} sequence is missing")
                    lengths[i] = len(s)
            mg.create_dataset("mean", data=means)
            if spec.has_sequences:
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                seq = mg.create_dataset("seq", shape=(int(offsets[-1]), d), dtype=np.float32,
                                        chunks=(max(1, min(4096, int(offsets[-1]))), d) if offsets[-1] else None)
                for i, v in enumerate(videos):
                    if lengths[i]:
                        seq[offsets[i]:offsets[i + 1]] = _check_dim(np.asarray(v.seq(m), np.float32), d,
                                                                    v.video_id, m)
                mg.create_dataset("offsets", data=offsets)
        _write_failures(f, list(failures))
    return len(videos)


def merge_stores(paths: Sequence[str | Path], out: str | Path) -> int:
    """Concatenate shard stores (same extractor and config) into one store."""
    if not paths:
        raise FeatureStoreError("no shard stores to merge")
    stores = [FeatureStore(p) for p in paths]
    first = stores[0]
    for s in stores[1:]:
        if s.config_hash != first.config_hash or s.dims != first.dims or s.has_sequences != first.has_sequences:
            raise FeatureStoreError(f"cannot merge {s.path}: different extractor configuration than {first.path}")
    videos, failures = [], []
    for s in stores:
        videos.extend(s.iter_videos())
        failures.extend(s.failures())
    return write_store(out, first.spec(), videos, failures)


class FeatureStore:
    """Read access to one feature file. Cheap to open: only ids, labels and attributes are read eagerly."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FeatureStoreError(f"feature store not found: {self.path}")
        with self._open() as f:
            if f.attrs.get("format") != FORMAT:
                raise FeatureStoreError(f"{self.path} is not an avzsl feature store")
            version = int(f.attrs["format_version"])
            if version > FORMAT_VERSION:
                raise FeatureStoreError(f"{self.path}: format version {version} is newer than this code")
            self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
            self.ids = [s.decode() if isinstance(s, bytes) else s for s in f["videos/id"][()]]
            self.labels = [s.decode() if isinstance(s, bytes) else s for s in f["videos/label"][()]]
            self.dims = {m: int(f[m].attrs["dim"]) for m in MODALITIES}
            self.step_seconds = {m: float(f[m].attrs["step_seconds"]) for m in MODALITIES}
            self._offsets = {m: f[f"{m}/offsets"][()] for m in MODALITIES if f"{m}/offsets" in f}
            self._failures = _read_failures(f)
            self.has_sequences = bool(self.attrs.get("has_sequences", False))
            self._check_structure(f)
        self.config_hash = str(self.attrs.get("config_hash", ""))
        self._row = {vid: i for i, vid in enumerate(self.ids)}

    @contextlib.contextmanager
    def _open(self):
        """Open for reading; a file that HDF5 cannot read (cut off mid-write, overwritten, not HDF5 at all) or that
        lacks the layout's datasets is damaged: moved aside, with one message saying so."""
        try:
            with h5py.File(self.path, "r") as f:
                yield f
        except FeatureStoreError:
            raise
        except (OSError, KeyError) as e:
            raise quarantine(self.path, f"not a readable feature store: {str(e).splitlines()[0]}") from None

    def _check_structure(self, f: h5py.File) -> None:
        n = len(self.ids)
        problems = [f"{m}/mean has {f[f'{m}/mean'].shape[0]} rows for {n} videos" for m in MODALITIES
                    if f[f"{m}/mean"].shape != (n, self.dims[m])]
        if len(self.labels) != n:
            problems.append(f"{len(self.labels)} labels for {n} videos")
        if self.has_sequences:
            for m in MODALITIES:
                off = self._offsets.get(m)
                if off is None or len(off) != n + 1 or int(off[-1]) != f[f"{m}/seq"].shape[0]:
                    problems.append(f"{m} offsets do not match {m}/seq")
        if problems:
            raise quarantine(self.path, "; ".join(problems))

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, video_ids: Sequence[str]) -> np.ndarray:
        """Row index of each id, -1 where the store has no such video."""
        return np.array([self._row.get(v, -1) for v in video_ids], dtype=np.int64)

    def means(self, modality: str, rows: np.ndarray | None = None) -> np.ndarray:
        with self._open() as f:
            data = f[f"{modality}/mean"][()]
        return data if rows is None else data[rows]

    def lengths(self, modality: str, rows: np.ndarray | None = None) -> np.ndarray:
        if not self.has_sequences:
            raise FeatureStoreError(f"{self.path} holds no per-step sequences (extractor {self.attrs.get('extractor')})")
        off = self._offsets[modality]
        lens = np.diff(off)
        return lens if rows is None else lens[rows]

    def sequences(self, modality: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat steps, offsets) of the given rows, in that order: steps of rows[i] are flat[off[i]:off[i+1]]."""
        off = self._offsets.get(modality)
        if not self.has_sequences or off is None:
            raise FeatureStoreError(f"{self.path} holds no per-step sequences (extractor {self.attrs.get('extractor')})")
        with self._open() as f:
            seq = f[f"{modality}/seq"][()]
        starts, ends = off[rows], off[np.asarray(rows) + 1]
        lengths = ends - starts
        new_off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if len(rows) == 0:
            return np.zeros((0, self.dims[modality]), np.float32), new_off
        gather = np.repeat(starts - new_off[:-1], lengths) + np.arange(new_off[-1])
        return seq[gather], new_off

    def failures(self) -> list[tuple[str, str]]:
        return list(self._failures)

    def iter_videos(self) -> Iterable[VideoFeatures]:
        with self._open() as f:
            means = {m: f[f"{m}/mean"][()] for m in MODALITIES}
            seqs = {m: f[f"{m}/seq"][()] for m in MODALITIES} if self.has_sequences else None
        for i, (vid, label) in enumerate(zip(self.ids, self.labels)):
            kw = {f"{m}_mean": means[m][i] for m in MODALITIES}
            if seqs is not None:
                for m in MODALITIES:
                    o = self._offsets[m]
                    kw[f"{m}_seq"] = seqs[m][o[i]:o[i + 1]]
            yield VideoFeatures(vid, label, **kw)

    def spec(self) -> StoreSpec:
        a = self.attrs
        reserved = {"format", "format_version", "extractor", "extractor_config", "config_hash", "code_version",
                    "created", "has_sequences"}
        return StoreSpec(
            audio_dim=self.dims["audio"], video_dim=self.dims["video"], has_sequences=self.has_sequences,
            extractor=str(a.get("extractor", "")), extractor_config=json.loads(a.get("extractor_config", "{}")),
            config_hash=self.config_hash, audio_step_seconds=self.step_seconds["audio"],
            video_step_seconds=self.step_seconds["video"],
            extra_attrs={k: v for k, v in a.items() if k not in reserved},
        )


def _write_attrs(f: h5py.File, spec: StoreSpec) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["extractor"] = spec.extractor
    f.attrs["extractor_config"] = json.dumps(spec.extractor_config, sort_keys=True)
    f.attrs["config_hash"] = spec.config_hash
    f.attrs["code_version"] = code_version()
    f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["has_sequences"] = bool(spec.has_sequences)
    for k, v in spec.extra_attrs.items():
        f.attrs[k] = v


def write_failures_tsv(path: str | Path, failures: Sequence[tuple[str, str]]) -> None:
    """The failed-media list beside a store (``failed_media.tsv``: video_id, reason), for people to read."""
    with atomic_path(path, suffix=".tsv") as tmp:
        tmp.write_text("video_id\treason\n" + "".join(f"{v}\t{r}\n" for v, r in failures))


def _write_failures(f: h5py.File, failures: list[tuple[str, str]]) -> None:
    g = f.create_group("failed")
    g.create_dataset("id", data=np.array([v for v, _ in failures], dtype=object), dtype=_STR)
    g.create_dataset("reason", data=np.array([r for _, r in failures], dtype=object), dtype=_STR)


def _read_failures(f: h5py.File) -> list[tuple[str, str]]:
    if "failed" not in f:
        return []
    ids = [s.decode() if isinstance(s, bytes) else s for s in f["failed/id"][()]]
    reasons = [s.decode() if isinstance(s, bytes) else s for s in f["failed/reason"][()]]
    return list(zip(ids, reasons))


def _check_dim(x: np.ndarray, d: int, vid: str, m: str) -> np.ndarray:
    if x.shape[-1] != d:
        raise FeatureStoreError(f"{vid}: {m} feature has dimension {x.shape[-1]}, store expects {d}")
    if not np.isfinite(x).all():
        raise FeatureStoreError(f"{vid}: {m} feature contains NaN or inf")
    return x


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _duplicates(ids: Sequence[str]) -> list[str]:
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    return dup
