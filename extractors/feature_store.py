"""The feature store: the one module that reads and writes avzsl's HDF5 feature files.

Layout (``format = "avzsl-features"``, ``format_version = 2``)::

    /                      attrs: format, format_version, extractor, extractor_config (JSON), config_hash,
                                  code_version, created, has_sequences, plus free-form provenance (e.g. weights)
    /videos/id             (N,)    utf-8   video id (unique)
    /videos/label          (N,)    utf-8   class name, as in the split files
    /<m>/mean              (N, D)  float32 mean over the video's steps (zeros where the modality is missing)
    /<m>/seq               (S, D)  float32 all steps of all videos, concatenated (only if has_sequences)
    /<m>/offsets           (N+1,)  int64   steps of video i are seq[offsets[i]:offsets[i+1]]
    /<m>/times             (S, 2)  float64 start and end (seconds) of every step's window (v2, with seq)
    /<m>/present           (N,)    bool    False: the video has no such stream (kept, zero steps) (v2)
                           attrs:  dim, step_seconds (the hop), window_seconds (v2)
    /failed/id, /failed/reason     media that could not be processed, and why
    /notes/id, /notes/note         how a stored video was read where it departs from the rule (e.g. a header
                                   without a frame count), one row per note

Sequences are ragged and stored flat so that a VGGSound-size store loads with a handful of reads. Version-1 files
(no times, no present) are read: their step k spans [k, k+1) * step_seconds and every modality is present.

Audio and video steps of a video are aligned in time: both cover the same span, the duration both streams cover
(the shorter stream decides), each with its own window and hop from 0. :func:`step_map` maps one modality's steps
onto the other's by their window centres.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from avzsl.common import atomic_path, code_version, quarantine

FORMAT = "avzsl-features"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
    audio_times: np.ndarray | None = None  # (T, 2) window start/end in seconds; default k*step .. (k+1)*step
    video_times: np.ndarray | None = None
    missing: tuple[str, ...] = ()  # modalities the video has no stream for (zero steps, mean of zeros)

    def seq(self, modality: str) -> np.ndarray | None:
        return getattr(self, f"{modality}_seq")

    def times(self, modality: str, step_seconds: float) -> np.ndarray:
        t = getattr(self, f"{modality}_times")
        if t is None:
            s = self.seq(modality)
            return default_times(0 if s is None else len(s), step_seconds)
        return np.asarray(t, np.float64).reshape(-1, 2)

    def mean(self, modality: str, dim: int | None = None) -> np.ndarray:
        m = getattr(self, f"{modality}_mean")
        if m is None and modality in self.missing:
            return np.zeros(dim if dim is not None else self.seq(modality).shape[-1], np.float32)
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
    audio_window_seconds: float | None = None  # None: the step
    video_window_seconds: float | None = None
    extra_attrs: dict = field(default_factory=dict)

    def dim(self, modality: str) -> int:
        return self.audio_dim if modality == "audio" else self.video_dim

    def step_seconds(self, modality: str) -> float:
        return self.audio_step_seconds if modality == "audio" else self.video_step_seconds

    def window_seconds(self, modality: str) -> float:
        w = self.audio_window_seconds if modality == "audio" else self.video_window_seconds
        return self.step_seconds(modality) if w is None else w


def default_times(n: int, step_seconds: float) -> np.ndarray:
    """Window times of a store without them (version 1): step k spans [k, k+1) * step_seconds."""
    k = np.arange(n, dtype=np.float64)
    return np.stack([k * step_seconds, (k + 1) * step_seconds], 1).reshape(-1, 2)


def step_map(src_times: np.ndarray, dst_times: np.ndarray) -> np.ndarray:
    """For each step of one modality (``dst_times``, (T, 2)), the index of the step of the other (``src_times``)
    whose window centre is nearest to its centre (ties: the earlier); -1 everywhere when ``src_times`` is empty.
    E.g. ``audio_seq[step_map(audio_times, video_times)]`` gives one audio step per video step."""
    src_c, dst_c = np.asarray(src_times).mean(1), np.asarray(dst_times).mean(1)
    if len(src_c) == 0:
        return np.full(len(dst_c), -1, np.int64)
    right = np.clip(np.searchsorted(src_c, dst_c), 1, len(src_c) - 1) if len(src_c) > 1 else np.zeros(len(dst_c), int)
    if len(src_c) == 1:
        return right.astype(np.int64)
    left = right - 1
    take_left = np.abs(dst_c - src_c[left]) <= np.abs(src_c[right] - dst_c)
    return np.where(take_left, left, right).astype(np.int64)


def write_store(path: str | Path, spec: StoreSpec, videos: Iterable[VideoFeatures],
                failures: Iterable[tuple[str, str]] = (), notes: Iterable[tuple[str, str]] = ()) -> int:
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
            mg.attrs["window_seconds"] = spec.window_seconds(m)
            means = np.zeros((len(videos), d), np.float32)
            lengths = np.zeros(len(videos), np.int64)
            present = np.array([m not in v.missing for v in videos], bool)
            mg.create_dataset("present", data=present)
            for i, v in enumerate(videos):
                means[i] = _check_dim(v.mean(m, d), d, v.video_id, m)
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
                times = np.zeros((int(offsets[-1]), 2), np.float64)
                for i, v in enumerate(videos):
                    if lengths[i]:
                        seq[offsets[i]:offsets[i + 1]] = _check_dim(np.asarray(v.seq(m), np.float32), d,
                                                                    v.video_id, m)
                        t = v.times(m, spec.step_seconds(m))
                        if t.shape != (lengths[i], 2):
                            raise FeatureStoreError(f"{v.video_id}: {len(t)} {m} window times for {lengths[i]} steps")
                        times[offsets[i]:offsets[i + 1]] = t
                mg.create_dataset("offsets", data=offsets)
                mg.create_dataset("times", data=times)
        _write_pairs(f, "failed", "reason", list(failures))
        notes = list(notes)
        if notes:
            _write_pairs(f, "notes", "note", notes)
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
    videos, failures, notes = [], [], []
    for s in stores:
        videos.extend(s.iter_videos())
        failures.extend(s.failures())
        notes.extend(s.notes())
    return write_store(out, first.spec(), videos, failures, notes)


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
            if version not in READABLE_VERSIONS:
                raise FeatureStoreError(f"{self.path}: format version {version} is not one this code reads "
                                        f"({READABLE_VERSIONS})")
            self.version = version
            self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
            self.ids = [s.decode() if isinstance(s, bytes) else s for s in f["videos/id"][()]]
            self.labels = [s.decode() if isinstance(s, bytes) else s for s in f["videos/label"][()]]
            self.dims = {m: int(f[m].attrs["dim"]) for m in MODALITIES}
            self.step_seconds = {m: float(f[m].attrs["step_seconds"]) for m in MODALITIES}
            self.window_seconds = {m: float(f[m].attrs.get("window_seconds", self.step_seconds[m]))
                                   for m in MODALITIES}
            self._present = {m: f[f"{m}/present"][()].astype(bool) if f"{m}/present" in f
                             else np.ones(len(f["videos/id"]), bool) for m in MODALITIES}
            self._offsets = {m: f[f"{m}/offsets"][()] for m in MODALITIES if f"{m}/offsets" in f}
            self._failures = _read_pairs(f, "failed", "reason")
            self._notes = _read_pairs(f, "notes", "note")
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
            for m in MODALITIES:
                if f"{m}/times" in f and f[f"{m}/times"].shape != (f[f"{m}/seq"].shape[0], 2):
                    problems.append(f"{m}/times does not match {m}/seq")
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

    def times(self, modality: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat (S, 2) window start/end in seconds, offsets) of the given rows, as :meth:`sequences`."""
        off = self._offsets.get(modality)
        if not self.has_sequences or off is None:
            raise FeatureStoreError(f"{self.path} holds no per-step sequences (extractor {self.attrs.get('extractor')})")
        rows = np.asarray(rows, np.int64)
        starts, ends = off[rows], off[rows + 1]
        lengths = ends - starts
        new_off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        with self._open() as f:
            stored = f[f"{modality}/times"][()] if f"{modality}/times" in f else None
        if stored is None:  # version 1: derived from the step
            local = np.arange(new_off[-1]) - np.repeat(new_off[:-1], lengths)
            flat = default_times(0, 0)
            if len(local):
                step = self.step_seconds[modality]
                flat = np.stack([local * step, (local + 1) * step], 1).astype(np.float64)
            return flat, new_off
        gather = np.repeat(starts - new_off[:-1], lengths) + np.arange(new_off[-1])
        return stored[gather], new_off

    def present(self, modality: str, rows: np.ndarray | None = None) -> np.ndarray:
        """True where the video has the modality (False: kept without it, zero steps, see ``missing_modality``)."""
        p = self._present[modality]
        return p if rows is None else p[rows]

    def video_steps(self, video_id: str) -> dict:
        """One video's steps: ``{m: (seq (T, D), times (T, 2))}``."""
        row = np.array([self._row[video_id]])
        return {m: (self.sequences(m, row)[0], self.times(m, row)[0]) for m in MODALITIES}

    def failures(self) -> list[tuple[str, str]]:
        return list(self._failures)

    def notes(self) -> list[tuple[str, str]]:
        """(video id, note) for stored videos read in a way worth knowing (see the extraction report)."""
        return list(self._notes)

    def iter_videos(self) -> Iterable[VideoFeatures]:
        with self._open() as f:
            means = {m: f[f"{m}/mean"][()] for m in MODALITIES}
            seqs = {m: f[f"{m}/seq"][()] for m in MODALITIES} if self.has_sequences else None
        times = ({m: self.times(m, np.arange(len(self.ids)))[0] for m in MODALITIES} if self.has_sequences
                 else None)
        for i, (vid, label) in enumerate(zip(self.ids, self.labels)):
            kw = {f"{m}_mean": means[m][i] for m in MODALITIES}
            if seqs is not None:
                for m in MODALITIES:
                    o = self._offsets[m]
                    kw[f"{m}_seq"] = seqs[m][o[i]:o[i + 1]]
                    kw[f"{m}_times"] = times[m][o[i]:o[i + 1]]
            missing = tuple(m for m in MODALITIES if not self._present[m][i])
            yield VideoFeatures(vid, label, missing=missing, **kw)

    def spec(self) -> StoreSpec:
        a = self.attrs
        reserved = {"format", "format_version", "extractor", "extractor_config", "config_hash", "code_version",
                    "created", "has_sequences"}
        return StoreSpec(
            audio_dim=self.dims["audio"], video_dim=self.dims["video"], has_sequences=self.has_sequences,
            extractor=str(a.get("extractor", "")), extractor_config=json.loads(a.get("extractor_config", "{}")),
            config_hash=self.config_hash, audio_step_seconds=self.step_seconds["audio"],
            video_step_seconds=self.step_seconds["video"], audio_window_seconds=self.window_seconds["audio"],
            video_window_seconds=self.window_seconds["video"],
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


def write_failures_tsv(path: str | Path, failures: Sequence[tuple[str, str]], header: str = "reason") -> None:
    """The failed-media list beside a store (``failed_media.tsv``: video_id, reason), for people to read; with
    ``header="note"`` the notes on stored videos (``media_notes.tsv``)."""
    with atomic_path(path, suffix=".tsv") as tmp:
        tmp.write_text(f"video_id\t{header}\n" + "".join(f"{v}\t{r}\n" for v, r in failures))


def read_failures_tsv(path: str | Path) -> list[tuple[str, str]]:
    """The ``(video_id, reason)`` pairs of :func:`write_failures_tsv`'s file (or its notes)."""
    lines = Path(path).read_text().splitlines()[1:]
    return [tuple(line.split("\t", 1)) for line in lines if line]


def _write_pairs(f: h5py.File, group: str, name: str, pairs: list[tuple[str, str]]) -> None:
    g = f.create_group(group)
    g.create_dataset("id", data=np.array([v for v, _ in pairs], dtype=object), dtype=_STR)
    g.create_dataset(name, data=np.array([r for _, r in pairs], dtype=object), dtype=_STR)


def _read_pairs(f: h5py.File, group: str, name: str) -> list[tuple[str, str]]:
    if group not in f:
        return []
    ids = [s.decode() if isinstance(s, bytes) else s for s in f[f"{group}/id"][()]]
    texts = [s.decode() if isinstance(s, bytes) else s for s in f[f"{group}/{name}"][()]]
    return list(zip(ids, texts))


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


def merge_features(shards: Sequence[str | Path], out: str | Path, failures_tsv: str | Path | None = None,
                   notes_tsv: str | Path | None = None) -> None:
    """Join shard stores into ``out``; its failed media and its notes also as TSV files when asked."""
    n = merge_stores(shards, out)
    store = FeatureStore(out)
    failures, notes = store.failures(), store.notes()
    logging.getLogger("avzsl").info("merged %d shards: %d videos, %d failed media, %d notes", len(shards), n,
                                    len(failures), len(notes))
    if failures_tsv:
        write_failures_tsv(failures_tsv, failures)
    if notes_tsv:
        write_failures_tsv(notes_tsv, notes, header="note")
