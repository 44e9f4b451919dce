"""Extract per-window audio and visual features for one shard of a manifest.

Decode workers (a DataLoader) decode and window videos on the CPU while the main process runs the backbone on
batches of windows pooled across videos (pinned memory, non-blocking copies, optional bf16 autocast). Progress
is committed in small chunk files next to the output, so an interrupted shard resumes where it stopped; the
shard file itself appears atomically when the shard is complete. A file that cannot be decoded is recorded
with its reason and the shard goes on.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avzsl.common import config_hash
from extractors.backbones import Backbone, build_backbone
from extractors.feature_store import FeatureStore, StoreSpec, VideoFeatures, merge_stores, write_store
from extractors.media.decode import MediaError, decode
from extractors.sources.manifest import ManifestRow, read_manifest, resolve_media

log = logging.getLogger("avzsl.extract")


@dataclass
class ExtractOptions:
    decoder: str = "pyav"
    workers: int = 2
    batch_windows: int = 256
    videos_per_load: int = 8
    chunk_videos: int = 64
    device: str = "auto"
    precision: str = "fp32"  # or "bf16"
    max_seconds: float | None = None
    progress: bool = True

    def __post_init__(self):
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ExtractionError(f"max_seconds must be a positive number of seconds or unset, got {self.max_seconds}")
        for name in ("batch_windows", "videos_per_load", "chunk_videos"):
            if getattr(self, name) < 1:
                raise ExtractionError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ExtractionError(f"workers must be 0 or more, got {self.workers}")
        if self.precision not in ("fp32", "bf16"):
            raise ExtractionError(f"precision must be fp32 or bf16, got {self.precision!r}")


class ExtractionError(ValueError):
    pass


def feature_spec(backbone: Backbone, decoder: str, max_seconds: float | None) -> StoreSpec:
    cfg = {**backbone.config(), "decoder": decoder, "max_seconds": max_seconds}
    return StoreSpec(audio_dim=backbone.audio_dim, video_dim=backbone.video_dim, has_sequences=True,
                     extractor=backbone.name, extractor_config=cfg, config_hash=config_hash(cfg),
                     audio_step_seconds=backbone.audio_step_seconds, video_step_seconds=backbone.video_step_seconds)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _ClipWindows(Dataset):
    def __init__(self, manifest: Path, rows: list[ManifestRow], backbone: Backbone, opts: ExtractOptions):
        self.manifest, self.rows, self.backbone, self.opts = manifest, rows, backbone, opts

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        try:
            clip = decode(resolve_media(self.manifest, row), fps=self.backbone.video_fps,
                          sample_rate=self.backbone.sample_rate, short_side=self.backbone.video_short_side,
                          decoder=self.opts.decoder, max_seconds=self.opts.max_seconds)
            return row, self.backbone.preprocess(clip), None
        except MediaError as e:
            return row, None, str(e)
        except Exception as e:  # noqa: BLE001 - an odd file must not stop the shard; the reason is kept
            return row, None, f"{type(e).__name__}: {e}"[:300]


def extract_shard(manifest: str | Path, shard: int, n_shards: int, backbone_name: str, backbone_params: dict,
                  out: str | Path, opts: ExtractOptions | None = None) -> dict:
    """Extract shard ``shard`` of ``n_shards`` (every n-th manifest row) into the store ``out``."""
    opts = opts or ExtractOptions()
    manifest, out = Path(manifest), Path(out)
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    rows = read_manifest(manifest)[shard::n_shards]
    device = resolve_device(opts.device)
    backbone = build_backbone(backbone_name, backbone_params).to(device).eval()
    spec = feature_spec(backbone, opts.decoder, opts.max_seconds)
    partial = out.with_name(out.name + ".partial")
    done = _completed_ids(partial, spec.config_hash)
    todo = [r for r in rows if r.video_id not in done]
    log.info("shard %d/%d: %d videos, %d already done, %d to extract on %s", shard, n_shards, len(rows),
             len(done), len(todo), device)
    t0 = time.time()
    _run(manifest, todo, backbone, spec, partial, device, opts)
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


def _run(manifest: Path, rows: list[ManifestRow], backbone: Backbone, spec: StoreSpec, partial: Path,
         device: torch.device, opts: ExtractOptions) -> None:
    if not rows:
        return
    partial.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(_ClipWindows(manifest, rows, backbone, opts), batch_size=opts.videos_per_load,
                        num_workers=opts.workers, collate_fn=list, pin_memory=device.type == "cuda",
                        persistent_workers=False, prefetch_factor=4 if opts.workers else None)
    from tqdm import tqdm

    bar = tqdm(total=len(rows), desc="extract", unit="video", disable=not opts.progress, mininterval=2)
    pending: list[VideoFeatures] = []
    failures: list[tuple[str, str]] = []
    chunk_id = len(list(partial.glob("chunk_*.h5")))
    for group in loader:
        good = [(row, win) for row, win, err in group if err is None]
        for row, _, err in group:
            if err is not None:
                failures.append((row.video_id, err))
                log.warning("skipping %s: %s", row.video_id, err)
        if good:
            feats = {m: _embed_pooled(backbone, m, [w[m] for _, w in good], device, opts) for m in ("audio", "video")}
            for i, (row, _) in enumerate(good):
                pending.append(VideoFeatures(row.video_id, row.label, audio_seq=feats["audio"][i],
                                             video_seq=feats["video"][i]))
        bar.update(len(group))
        if len(pending) + len(failures) >= opts.chunk_videos:
            write_store(partial / f"chunk_{chunk_id:05d}.h5", spec, pending, failures)
            chunk_id += 1
            pending, failures = [], []
    if pending or failures:
        write_store(partial / f"chunk_{chunk_id:05d}.h5", spec, pending, failures)
    bar.close()


@torch.inference_mode()
def _embed_pooled(backbone: Backbone, modality: str, windows: list[torch.Tensor], device: torch.device,
                  opts: ExtractOptions) -> list[np.ndarray]:
    """Run the backbone over the windows of several videos at once; split the result back per video."""
    lengths = [len(w) for w in windows]
    flat = torch.cat(windows)
    outs = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.precision == "bf16")
    for start in range(0, len(flat), opts.batch_windows):
        x = flat[start:start + opts.batch_windows].to(device, non_blocking=True)
        with autocast:
            outs.append(backbone.embed(modality, x).float())
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
