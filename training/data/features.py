"""Features held as tensors on the training device, and the batches cut from them by indexing.

A :class:`FeatureBank` loads the videos of a split once (means, and per-step sequences when a model needs them) and
serves batches with pure tensor indexing: no per-sample Python, no DataLoader, no host-device copies per step.
Sequences are stored flat with offsets and padded on the fly to a fixed length (the longest video, optionally capped:
a random crop in training, a centre crop in evaluation; the caps may differ, e.g. TCaF trains ActivityNet on 60-step
and evaluates on 300-step crops), so batch shapes never depend on data and no device synchronisation is needed.
A random crop starts at the same relative position in both modalities, so the audio and the video crop cover the
same stretch of the video even when their step durations differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extractors.feature_store import MODALITIES, FeatureStore
from extractors.splits import read_splits
from extractors.text_store import TextEmbeddings
from training.data.batch import Batch

log = logging.getLogger("avzsl.data")


class FeatureBank:
    """Features of a set of videos on one device."""

    def __init__(self, store: FeatureStore, rows: np.ndarray, device: torch.device, sequences: bool = False):
        self.device = device
        self.n = len(rows)
        self.means = {m: torch.from_numpy(store.means(m, rows)).to(device) for m in MODALITIES}
        self.dims = {m: self.means[m].shape[1] for m in MODALITIES}
        self.step_seconds = dict(store.step_seconds)
        self.sequences = sequences
        self.flat, self.offsets, self.lengths, self.longest = {}, {}, {}, {}
        # a store of per-video means (e.g. AVCA's released features) serves each mean as a one-step sequence
        self.sequence_source = "per-step" if store.has_sequences else "mean as one step"
        if sequences:
            for m in MODALITIES:
                if store.has_sequences:
                    flat, off = store.sequences(m, rows)
                    self.flat[m] = torch.from_numpy(flat).to(device)
                else:
                    off = np.arange(len(rows) + 1)
                    self.flat[m] = self.means[m]
                self.offsets[m] = torch.from_numpy(off[:-1]).to(device)
                lengths = torch.from_numpy(np.diff(off)).to(device)
                self.lengths[m] = lengths
                self.longest[m] = max(1, int(lengths.max()) if len(lengths) else 1)

    def gather(self, idx: torch.Tensor, crop: str = "center", generator: torch.Generator | None = None,
               label: torch.Tensor | None = None, text: torch.Tensor | None = None,
               max_steps: int | None = None) -> Batch:
        kw = {"audio": self.means["audio"][idx], "video": self.means["video"][idx]}
        if self.sequences:
            r = torch.rand(idx.shape, device=self.device, generator=generator) if crop == "random" else None
            for m in MODALITIES:
                kw[f"{m}_seq"], kw[f"{m}_pad"] = self._padded(m, idx, r, max_steps)
        return Batch(label=label, text=text, **kw)

    def _padded(self, m: str, idx: torch.Tensor, r: torch.Tensor | None, max_steps: int | None):
        """``r``: the random crop position in [0, 1) shared by both modalities (None: centre crop)."""
        t = min(self.longest[m], max_steps) if max_steps else self.longest[m]
        length = self.lengths[m][idx]
        spare = (length - t).clamp(min=0)
        if r is not None:
            start = (r * (spare + 1).to(r.dtype)).long().clamp(max=spare)
        else:
            start = spare // 2
        steps = torch.arange(t, device=self.device)
        valid = steps[None, :] < length.clamp(max=t)[:, None]
        pos = self.offsets[m][idx][:, None] + start[:, None] + steps[None, :]
        pos = torch.where(valid, pos, torch.zeros_like(pos))
        seq = self.flat[m][pos] * valid[..., None].to(self.flat[m].dtype)
        return seq, ~valid


@dataclass
class EvalSet:
    idx: torch.Tensor  # positions in the bank
    labels: torch.Tensor  # global class ids
    seen: list[int]
    unseen: list[int]

    @property
    def class_ids(self) -> list[int]:
        return sorted(set(self.seen) | set(self.unseen))


@dataclass
class StageData:
    bank: FeatureBank
    text: torch.Tensor  # (n_all_classes, D): row = class id, matched by class name
    class_names: list[str]
    train_idx: torch.Tensor
    train_labels: torch.Tensor
    val: EvalSet
    test: EvalSet | None
    counts: dict
    max_steps: int | None = None  # sequence cap in training (random crops)
    eval_max_steps: int | None = None  # sequence cap in evaluation (centre crops)

    def batch(self, pos: torch.Tensor, neg_pos: torch.Tensor | None = None, crop: str = "random",
              generator: torch.Generator | None = None) -> Batch:
        """Training batch from positions into the training set (and, optionally, negatives)."""
        idx, labels = self.train_idx[pos], self.train_labels[pos]
        b = self.bank.gather(idx, crop, generator, label=labels, text=self.text[labels], max_steps=self.max_steps)
        if neg_pos is not None:
            nl = self.train_labels[neg_pos]
            b.neg = self.bank.gather(self.train_idx[neg_pos], crop, generator, label=nl, text=self.text[nl],
                                     max_steps=self.max_steps)
        return b

    def eval_batch(self, idx: torch.Tensor) -> Batch:
        return self.bank.gather(idx, crop="center", max_steps=self.eval_max_steps)


def usable_rows(store: FeatureStore, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Which rows (-1: absent) can be trained on: present in the store with both modalities. A video stored without
    one (``extract.missing_modality: keep``) has no steps and a zero mean there; the models need both, so it is left
    out and counted. Returns (mask, number left out for a missing modality)."""
    found = rows >= 0
    both = np.ones(len(rows), bool)
    for m in MODALITIES:
        both[found] &= store.present(m, rows[found])
    return found & both, int((found & ~both).sum())


def load_stage(features: str | Path, split_dir: str | Path, text: str | Path, stage: int, device: torch.device,
               sequences: bool = False, max_steps: int | None = None, eval_max_steps: int | None = None,
               mem_mb: int | None = None) -> StageData:
    """Everything one training stage needs, on ``device``.

    Stage 1 trains on stage_1_train and validates on val_seen ∪ val_unseen. Stage 2 trains on
    stage_1_train ∪ val_seen ∪ val_unseen, still computes the validation score (the reference drives its learning-rate
    schedule with it) and is tested on test_seen ∪ test_unseen. Split videos missing from the feature store (failed
    downloads or decodes) are left out and counted; a scored class left with no video (in either stage's scored
    sets, so that stage 1 stops before training) is an error, not a 0.
    ``mem_mb``: the job's memory budget, checked before the features are loaded.
    """
    splits = read_splits(split_dir)
    store = FeatureStore(features)
    emb = TextEmbeddings(text)
    text_matrix = torch.from_numpy(emb.matrix(splits.all_classes)).to(device)
    groups = {"train": splits.train_videos(stage), "val": splits.eval_videos(1)}
    if stage == 2:
        groups["test"] = splits.eval_videos(2)
    rows_by_group, labels_by_group, counts = {}, {}, {}
    for name, vids in groups.items():
        rows = store.rows([v for v, _ in vids])
        keep, no_modality = usable_rows(store, rows)
        missing = int((rows < 0).sum())
        counts[name] = {"listed": len(vids), "missing_features": missing}
        if no_modality:
            counts[name]["missing_modality"] = no_modality
            log.warning("%s: %d split videos lack a modality (kept by extract.missing_modality: keep); left out",
                        name, no_modality)
        if missing:
            log.warning("%s: %d of %d split videos have no features (failed or absent media); left out",
                        name, missing, len(vids))
        rows_by_group[name] = rows[keep]
        labels_by_group[name] = np.array([splits.class_id(c) for (_, c), k in zip(vids, keep) if k], dtype=np.int64)
    scored_labels = dict(labels_by_group)
    if stage == 1:
        # stage 2 scores the test sets after stage 1 has trained: a test class whose every video failed extraction
        # (failed_media.tsv) would stop the run only then, so stage 1 checks them too and stops before training
        test = splits.eval_videos(2)
        keep, _ = usable_rows(store, store.rows([v for v, _ in test]))
        scored_labels["test"] = np.array([splits.class_id(c) for (_, c), k in zip(test, keep) if k], dtype=np.int64)
    _check_scored_classes(splits, stage, scored_labels, features)
    all_rows = np.concatenate(list(rows_by_group.values()))
    unique_rows, inverse = np.unique(all_rows, return_inverse=True)
    if mem_mb:
        from training.memory import check_loading_memory

        check_loading_memory(store, unique_rows, sequences, mem_mb)
    bank = FeatureBank(store, unique_rows, device, sequences=sequences)
    if sequences and not store.has_sequences:
        log.warning("%s holds per-video means only: the model reads each mean as a one-step sequence", features)
        counts["inputs"] = bank.sequence_source
    pos, start = {}, 0
    for name in rows_by_group:
        n = len(rows_by_group[name])
        pos[name] = torch.from_numpy(inverse[start:start + n]).to(device)
        start += n
    lab = {k: torch.from_numpy(v).to(device) for k, v in labels_by_group.items()}
    val_seen, val_unseen = splits.seen_unseen(1)
    val = EvalSet(pos["val"], lab["val"], val_seen, val_unseen)
    test = None
    if stage == 2:
        test_seen, test_unseen = splits.seen_unseen(2)
        test = EvalSet(pos["test"], lab["test"], test_seen, test_unseen)
    return StageData(bank, text_matrix, splits.all_classes, pos["train"], lab["train"], val, test, counts,
                     max_steps, eval_max_steps)



def _check_scored_classes(splits, stage: int, labels_by_group: dict, features) -> None:
    """Every class a run scores (stage 1's validation sets and stage 2's test sets, checked by both stages so that
    the run stops before any training) needs at least one video with features, and training at least one video."""
    if len(labels_by_group["train"]) == 0:
        raise ValueError(f"stage {stage} has no training video with features in {features} "
                         "(every listed video failed or is absent)")
    scored = [("stage_1_val_seen", "stage_1_val_unseen", "val"), ("stage_2_test_seen", "stage_2_test_unseen", "test")]
    for seen_name, unseen_name, group in scored:
        present = set(labels_by_group[group].tolist())
        for split_name in (seen_name, unseen_name):
            for c in splits.classes[split_name]:
                if splits.class_id(c) not in present:
                    raise ValueError(f"{split_name}: class {c!r} has no video with features in {features} "
                                     "(its videos failed extraction or are absent), so it cannot be scored; "
                                     "see failed_media.tsv next to the store, fix or replace the media, or "
                                     "rebuild the splits without the class")
