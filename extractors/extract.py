"""Extract per-window audio and visual features for one shard of a manifest.

Decode workers (a DataLoader over an iterable dataset) decode and window videos on the CPU, a long video in pieces
of ``chunk_seconds`` (never whole), while the main process runs the backbone on batches of windows pooled across
videos (pinned memory, non-blocking copies, video networks in channels-last layout, optional bf16 autocast). The
job's cores are split between the network's threads and the decode workers by :func:`plan_threads`. Progress
is committed in small chunk files next to the output, so an interrupted shard resumes where it stopped; the
shard file itself appears atomically when the shard is complete. A file that cannot be decoded is recorded
with its reason and the shard goes on.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avzsl.common import config_hash
from extractors.backbones import Backbone, build_backbone
from extractors.backbones.base import (
    MODALITIES,
    Combined,
    WindowPiece,
    build_feature_set,
    normalize_feature_set,
    stream_windows,
)
from extractors.feature_store import FeatureStore, StoreSpec, VideoFeatures, merge_stores, write_store
from extractors.media.decode import MediaError, decode_stream
from extractors.sources.manifest import ManifestRow, read_manifest, resolve_media
from extractors.weights import check_local

log = logging.getLogger("avzsl.extract")


# Windows per backbone call when not configured. Every call runs a full (padded) batch, so this sets the memory even
# for a shard of a few videos: a batch of 256 SeLaVi windows in fp32 on the CPU grew past 21 GB and was killed on a
# 24 GB machine; the memory grows with the batch, so 8 windows on the CPU need about 1/32 of that.
AUTO_BATCH_WINDOWS = {"cpu": 8, "cuda": 64, "mps": 16}
# On the CPU the network needs every core (decoding and preprocessing cost a few per cent of its time): it gets all
# of the job's cores, and one decode worker per this many cores runs at the lowest priority in the cycles it leaves.
CPU_CORES_PER_DECODE_WORKER = 16


@dataclass
class ExtractOptions:
    decoder: str = "pyav"
    workers: int | None = None  # decode worker processes; None: planned from the job's cores (plan_threads)
    threads: int | None = None  # the job's cores (None: leave the process's torch threads as they are; see plan_threads)
    batch_windows: int | None = None  # None: AUTO_BATCH_WINDOWS for the device
    videos_per_load: int = 64  # finished videos that may wait for a full batch before a padded one is run
    chunk_videos: int = 64
    fixed_batch: bool = True  # pad the last batch: identical features whatever the batch composition
    chunk_seconds: float | None = 60.0  # decode and window long videos in pieces of this length (None: whole)
    missing_modality: str = "drop"  # or "keep": store a video without an audio (video) stream, marked missing
    device: str = "auto"
    precision: str = "fp32"  # or "bf16" (refused with a backbone in mode reference)
    channels_last: bool = True  # video networks (5-d weights) in channels_last_3d; False: torch's NCDHW default
    idle_workers: bool | None = None  # decode workers at nice 19 (None: on the CPU, see plan_threads)
    max_seconds: float | None = None
    progress: bool = True
    worker_timeout: float = 900.0  # seconds a decode worker may take for one piece before the shard fails (0: none)
    feature_set_name: str = ""  # for messages (feature_sets.<name>...)

    def __post_init__(self):
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ExtractionError(f"max_seconds must be a positive number of seconds or unset, got {self.max_seconds}")
        if self.chunk_seconds is not None and not self.chunk_seconds > 0:
            raise ExtractionError(f"chunk_seconds must be a positive number of seconds or unset, got "
                                  f"{self.chunk_seconds}")
        for name in ("batch_windows", "videos_per_load", "chunk_videos"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ExtractionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.worker_timeout < 0:
            raise ExtractionError(f"worker_timeout must be 0 or more seconds, got {self.worker_timeout}")
        if self.workers is not None and self.workers < 0:
            raise ExtractionError(f"workers must be 0 or more, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ExtractionError(f"threads must be at least 1, got {self.threads}")
        if self.precision not in ("fp32", "bf16"):
            raise ExtractionError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.missing_modality not in MISSING_POLICIES:
            raise ExtractionError(f"missing_modality must be one of {MISSING_POLICIES}, got {self.missing_modality!r}")


MISSING_POLICIES = ("drop", "keep")


class ExtractionError(ValueError):
    pass


def feature_spec(backbone: Backbone, decoder: str, max_seconds: float | None, missing_modality: str = "drop",
                 weights: list[dict] | None = None) -> StoreSpec:
    """The store's description. Everything that changes a feature value is in the configuration (and its hash);
    the weight records (file, size, sha256) are provenance beside it."""
    cfg = {**backbone.config(), "decoder": decoder, "max_seconds": max_seconds}
    if missing_modality != "drop":
        cfg["missing_modality"] = missing_modality
    if weights:
        cfg["weights_sha256"] = sorted(w["sha256"] for w in weights)
    extra = {"weights": json.dumps(weights, sort_keys=True)} if weights else {}
    names = {m: (backbone.parts[m].name if isinstance(backbone, Combined) else backbone.name) for m in MODALITIES}
    extractor = names["audio"] if names["audio"] == names["video"] else f"{names['audio']}+{names['video']}"
    return StoreSpec(audio_dim=backbone.dim("audio"), video_dim=backbone.dim("video"), has_sequences=True,
                     extractor=extractor, extractor_config=cfg, config_hash=config_hash(cfg),
                     audio_step_seconds=backbone.specs["audio"].hop_seconds,
                     video_step_seconds=backbone.specs["video"].hop_seconds,
                     audio_window_seconds=backbone.specs["audio"].window_seconds,
                     video_window_seconds=backbone.specs["video"].window_seconds, extra_attrs=extra)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class ThreadPlan:
    """How one extraction job uses its cores: the network's torch threads (intra-op) and inter-op threads, the
    decode worker processes, and whether those workers run at the lowest priority (on the cycles the network
    leaves)."""

    cores: int
    torch_threads: int
    interop_threads: int
    decode_workers: int
    idle_workers: bool


def job_cores(requested: int | None = None) -> int:
    """The cores this job may use: ``requested`` (the rule's threads), never more than the CPUs this process may
    run on (its affinity: a SLURM job's cgroup or a ``taskset``) nor a SLURM allocation's ``SLURM_CPUS_PER_TASK``."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    limits = [available]
    if requested:
        limits.append(int(requested))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        limits.append(int(slurm))
    return max(1, min(limits))


def plan_threads(cores: int, device_type: str, workers: int | None = None) -> ThreadPlan:
    """Split ``cores`` between the network and decoding, never giving more threads than cores.

    CPU: the network is the bottleneck (decoding and preprocessing take a few per cent of its time), so its torch
    threads take every core and ``max(1, cores // CPU_CORES_PER_DECODE_WORKER)`` decode workers run at the lowest
    priority (nice 19): they decode the next batch on the cycles the network leaves (between layers, while Python
    gathers a batch) and hardly take a core from it. GPU: the network runs on the device, so the decode workers get
    ``cores - 1`` cores at normal priority and the process that feeds the GPU keeps one. ``workers`` overrides the
    number of decode workers (0: decode in the job's own process, no overlap). Inter-op threads: 1 (inference runs
    one operator at a time)."""
    cores = max(1, int(cores))
    if device_type == "cpu":
        n = max(1, cores // CPU_CORES_PER_DECODE_WORKER) if workers is None else workers
        return ThreadPlan(cores, cores, 1, n, idle_workers=n > 0)
    n = max(1, cores - 1) if workers is None else workers
    return ThreadPlan(cores, max(1, cores - n), 1, n, idle_workers=False)


def _idle_priority(_worker_id: int) -> None:
    """DataLoader worker_init_fn: this decode worker (and the decoder threads it starts, which inherit it) at the
    lowest priority, nice 19: on a core the network's threads want it gets about 1.5 % of the time, on an idle core
    all of it. (Not SCHED_IDLE: under a machine oversubscribed by other jobs that would starve it past
    ``worker_timeout``.)"""
    try:
        os.nice(19 - os.nice(0))
    except OSError:
        pass


def _set_interop_threads(n: int) -> None:
    """Inter-op threads can be set once per process, before any parallel work; later calls keep what is set."""
    if torch.get_num_interop_threads() == n:
        return
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())


def reference_parts(backbone: Backbone) -> list[str]:
    """The modalities whose backbone runs in ``mode: reference``."""
    parts = backbone.parts if isinstance(backbone, Combined) else {m: backbone for m in backbone.modalities}
    return [m for m, b in parts.items() if b.params.get("mode") == "reference"]


def check_precision(backbone: Backbone, precision: str, where: str = "feature set") -> None:
    """bf16 changes every feature (see docs/extraction.md); the reference mode exists to give the original
    extraction's features exactly, so the two are refused together."""
    ref = reference_parts(backbone)
    if precision != "fp32" and ref:
        keys = (", ".join(f"{where}.{m}.params.mode" for m in ref) if isinstance(backbone, Combined)
                else f"{where}.params.mode")
        raise ExtractionError(f"extract.precision: {precision} is refused with mode: reference ({keys}); the "
                              "reference mode reproduces the original fp32 features. Set extract.precision: fp32, or "
                              "mode: clean")


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """Every 5-d parameter and buffer (3-d convolutions' weights) in channels_last_3d, in place: the convolutions
    then run channels-last (fp32 results equal NCDHW's to float rounding; faster on CPUs and GPUs)."""
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() == 5:
            t.data = t.data.contiguous(memory_format=torch.channels_last_3d)
    return module


@dataclass
class _Item:
    row: ManifestRow
    piece: WindowPiece | None
    error: str | None = None


class _StreamWindows(IterableDataset):
    """Decode workers: each takes every n-th video of the list and yields its windows piece by piece."""

    def __init__(self, manifest: Path, rows: list[ManifestRow], backbone: Backbone, opts: ExtractOptions):
        self.manifest, self.rows, self.backbone, self.opts = manifest, rows, backbone, opts

    def __iter__(self):
        info = get_worker_info()
        rows = self.rows if info is None else self.rows[info.id::info.num_workers]
        for row in rows:
            yield from self._video(row)

    def _video(self, row: ManifestRow):
        fmt, opts = self.backbone.input_format, self.opts
        missing_ok = MODALITIES if opts.missing_modality == "keep" else ()
        try:
            pieces = decode_stream(resolve_media(self.manifest, row), **fmt.decode_options(), decoder=opts.decoder,
                                   max_seconds=opts.max_seconds, missing_ok=missing_ok,
                                   chunk_seconds=opts.chunk_seconds)
            for piece in stream_windows(self.backbone, pieces):
                yield _Item(row, piece)
        except MediaError as e:
            yield _Item(row, None, str(e))
        except Exception as e:  # noqa: BLE001 - an odd file must not stop the shard; the reason is kept
            yield _Item(row, None, f"{type(e).__name__}: {e}"[:300])


def extract_shard(manifest: str | Path, shard: int, n_shards: int, backbone_name: str | dict,
                  backbone_params: dict | None, out: str | Path, opts: ExtractOptions | None = None,
                  weights: list[dict] | None = None) -> dict:
    """Extract shard ``shard`` of ``n_shards`` (every n-th manifest row) into the store ``out``.

    ``backbone_name`` is a backbone name (with ``backbone_params``) or a feature-set entry
    (``{"backbone", "params", "audio": {...}, "video": {...}}``, see :func:`build_feature_set`). ``weights``: the
    records of the weight files used (``extractors.weights``), kept as provenance in the store.
    """
    opts = opts or ExtractOptions()
    manifest, out = Path(manifest), Path(out)
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    rows = read_manifest(manifest)[shard::n_shards]
    device = resolve_device(opts.device)
    if opts.batch_windows is None:
        opts = dataclasses.replace(opts, batch_windows=AUTO_BATCH_WINDOWS.get(device.type, 8))
    where = opts.feature_set_name and f"feature_sets.{opts.feature_set_name}" or "feature set"
    if isinstance(backbone_name, dict):
        fs = normalize_feature_set(backbone_name, where)
        fs = {m: {**e, "params": check_local(e["params"], f"{where}.{m}")} for m, e in fs.items()}
        backbone = build_feature_set(fs, where)
    else:
        backbone = build_backbone(backbone_name, backbone_params)
    check_precision(backbone, opts.precision, where)
    if opts.precision == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("extract.precision bf16: this CPU has no bf16 matrix instructions; bf16 will be slower than fp32")
    backbone = backbone.to(device).eval()
    if opts.channels_last:
        to_channels_last(backbone)
    plan = plan_threads(job_cores(opts.threads) if opts.threads else torch.get_num_threads(), device.type,
                        opts.workers)
    opts = dataclasses.replace(opts, workers=plan.decode_workers,
                               idle_workers=plan.idle_workers if opts.idle_workers is None else opts.idle_workers)
    spec = feature_spec(backbone, opts.decoder, opts.max_seconds, opts.missing_modality, weights)
    partial = out.with_name(out.name + ".partial")
    done = _completed_ids(partial, spec.config_hash)
    todo = [r for r in rows if r.video_id not in done]
    log.info("shard %d/%d: %d videos, %d already done, %d to extract on %s", shard, n_shards, len(rows),
             len(done), len(todo), device)
    log.info("threads: %d cores; network %d torch thread(s), %d decode worker(s)%s", plan.cores,
             plan.torch_threads if opts.threads else torch.get_num_threads(), opts.workers,
             " at nice 19" if opts.workers and opts.idle_workers else "")
    t0 = time.time()
    before = torch.get_num_threads()
    if opts.threads:  # the job's own thread counts; the caller's are restored afterwards
        torch.set_num_threads(plan.torch_threads)
        _set_interop_threads(plan.interop_threads)
    try:
        _run(manifest, todo, backbone, spec, partial, device, opts)
    finally:
        torch.set_num_threads(before)
    chunks = sorted(partial.glob("chunk_*.h5")) if partial.exists() else []
    stores = [FeatureStore(c) for c in chunks]  # opened once: ids and failures are read eagerly
    if rows and not any(len(s) for s in stores):
        # nothing usable: a systematic problem (paths, codecs, settings), not bad media; keep nothing, so that the
        # rerun after the fix tries every video again
        failures = [f for s in stores for f in s.failures()]
        shutil.rmtree(partial, ignore_errors=True)
        first = f"{failures[0][0]}: {failures[0][1]}" if failures else "no reason recorded"
        raise ExtractionError(f"every one of the {len(rows)} videos of shard {shard} of {manifest} failed (first: "
                              f"{first}); nothing was written. Check the media files and the extraction settings, "
                              "then rerun")
    if chunks:
        merge_stores(chunks, out)
    else:
        write_store(out, spec, [])
    stats = _summary(FeatureStore(out), len(rows), time.time() - t0)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("shard %d done: %d ok, %d failed (%.1fs)", shard, stats["videos"], stats["failed"], stats["seconds"])
    return stats


@dataclass
class _Pending:
    """A video whose windows are arriving: features per modality as they are computed."""

    row: ManifestRow
    feats: dict = field(default_factory=lambda: {m: [] for m in MODALITIES})
    times: dict = field(default_factory=lambda: {m: [] for m in MODALITIES})
    queued: int = 0  # windows not yet embedded
    final: WindowPiece | None = None


def _run(manifest: Path, rows: list[ManifestRow], backbone: Backbone, spec: StoreSpec, partial: Path,
         device: torch.device, opts: ExtractOptions) -> None:
    """Stream windows from the decode workers, embed them in batches of exactly ``batch_windows`` pooled across
    videos, commit finished videos in chunk files. A video's features never depend on which other windows share its
    batch (every backbone call has the same shape; a window's output depends only on its own input)."""
    if not rows:
        return
    partial.mkdir(parents=True, exist_ok=True)
    if opts.workers:
        # Decode workers are forked. A decoder left in a garbage cycle here would be freed again in the child,
        # whose copy of its threads does not exist: free it now, before the fork (a worker would hang, not fail).
        gc.collect()
    loader = DataLoader(_StreamWindows(manifest, rows, backbone, opts), batch_size=None,
                        num_workers=opts.workers, timeout=opts.worker_timeout if opts.workers else 0,
                        worker_init_fn=_idle_priority if opts.workers and opts.idle_workers else None,
                        persistent_workers=False, prefetch_factor=4 if opts.workers else None)
    from tqdm import tqdm

    bar = tqdm(total=len(rows), desc="extract", unit="video", disable=not opts.progress, mininterval=2)
    videos: dict[str, _Pending] = {}
    queue: dict[str, list[tuple[str, torch.Tensor]]] = {m: [] for m in MODALITIES}
    done: list[VideoFeatures] = []
    failures: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    chunk_id = len(list(partial.glob("chunk_*.h5")))

    def flush(force: bool) -> None:
        """Embed whole batches of ``batch_windows`` windows; with ``force`` also the rest (padded to a batch)."""
        for m in MODALITIES:
            total = sum(len(w) for _, w in queue[m])
            take = total if force else total // opts.batch_windows * opts.batch_windows
            if not take:
                continue
            segments, rest, n = [], [], 0
            for vid, w in queue[m]:
                k = max(0, min(len(w), take - n))
                if k:
                    segments.append((vid, w[:k]))
                    n += k
                if k < len(w):
                    rest.append((vid, w[k:]))
            feats = _embed_pooled(backbone, m, [w for _, w in segments], device, opts)
            for (vid, _), f in zip(segments, feats):
                videos[vid].feats[m].append(f)
                videos[vid].queued -= len(f)
            queue[m] = rest
        for vid in [v for v, p in videos.items() if p.final is not None and p.queued == 0]:
            done.append(_finished(videos.pop(vid), spec))

    for item in loader:
        vid = item.row.video_id
        if item.error is not None:
            failures.append((vid, item.error))
            log.warning("skipping %s: %s", vid, item.error)
            videos.pop(vid, None)
            for m in MODALITIES:
                queue[m] = [(v, w) for v, w in queue[m] if v != vid]
            bar.update(1)
        else:
            p = videos.setdefault(vid, _Pending(item.row))
            for m, w in item.piece.windows.items():
                queue[m].append((vid, w))
                p.times[m].append(item.piece.windows.times[m])
                p.queued += len(w)
            if item.piece.final:
                p.final = item.piece
                notes.extend((vid, n) for n in item.piece.notes)
                for n in item.piece.notes:
                    log.info("%s: %s", vid, n)
                bar.update(1)
        waiting = sum(1 for p in videos.values() if p.final is not None)
        flush(force=waiting >= opts.videos_per_load)
        if len(done) + len(failures) >= opts.chunk_videos:
            # notes of videos not yet committed wait for their chunk
            ids = {v.video_id for v in done}
            write_store(partial / f"chunk_{chunk_id:05d}.h5", spec, done, failures,
                        [n for n in notes if n[0] in ids])
            notes = [n for n in notes if n[0] not in ids]
            chunk_id += 1
            done, failures = [], []
    flush(force=True)
    if done or failures:
        write_store(partial / f"chunk_{chunk_id:05d}.h5", spec, done, failures, notes)
    bar.close()


def _finished(p: _Pending, spec: StoreSpec) -> VideoFeatures:
    kw = {}
    for m in MODALITIES:
        n = p.final.counts[m]
        if m in p.final.missing:
            kw[f"{m}_seq"] = np.zeros((0, spec.dim(m)), np.float32)
            kw[f"{m}_times"] = np.zeros((0, 2), np.float64)
        else:
            kw[f"{m}_seq"] = np.concatenate(p.feats[m])[:n]
            kw[f"{m}_times"] = np.concatenate(p.times[m])[:n]
    return VideoFeatures(p.row.video_id, p.row.label, missing=tuple(p.final.missing), **kw)


@torch.inference_mode()
def _embed_pooled(backbone: Backbone, modality: str, windows: list[torch.Tensor], device: torch.device,
                  opts: ExtractOptions) -> list[np.ndarray]:
    """Run the backbone over the windows of several videos at once; split the result back per video."""
    lengths = [len(w) for w in windows]
    if device.type == "cuda":  # gather into page-locked memory so that the copies below are asynchronous
        flat = torch.empty((sum(lengths), *windows[0].shape[1:]), dtype=windows[0].dtype, pin_memory=True)
        torch.cat(windows, out=flat)
    else:
        flat = torch.cat(windows)
    outs = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.precision == "bf16")
    for start in range(0, len(flat), opts.batch_windows):
        x = flat[start:start + opts.batch_windows]
        n = len(x)
        if opts.fixed_batch and n < opts.batch_windows:
            # every call sees the same batch shape, so a window's features never depend on the batch it fell in
            x = torch.cat([x, x.new_zeros((opts.batch_windows - n, *x.shape[1:]))])
        x = x.to(device, non_blocking=True)
        with autocast:
            outs.append(backbone.embed(modality, x)[:n].float())
    feats = torch.cat(outs).cpu().numpy()
    return np.split(feats, np.cumsum(lengths)[:-1])


def _completed_ids(partial: Path, expected_hash: str) -> set[str]:
    """Ids already committed by an earlier, interrupted run with the same configuration."""
    done: set[str] = set()
    if not partial.exists():
        return done
    for chunk in sorted(partial.glob("chunk_*.h5")):
        try:
            store = FeatureStore(chunk)
        except Exception:  # noqa: BLE001 - a chunk cut off mid-write is simply redone
            chunk.unlink()
            continue
        if store.config_hash != expected_hash:
            log.info("discarding partial results of a different configuration in %s", partial)
            shutil.rmtree(partial)
            return set()
        done.update(store.ids)
        done.update(v for v, _ in store.failures())
    return done


def _summary(store: FeatureStore, n_rows: int, seconds: float) -> dict:
    fails = store.failures()
    return {"videos": len(store), "failed": len(fails), "rows": n_rows, "seconds": round(seconds, 2),
            "failure_examples": fails[:20]}
