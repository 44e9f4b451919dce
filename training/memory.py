"""Memory a training job needs, compared with the job's budget (its ``mem_mb``) before the budget is overrun.

Two checks, each before the allocation it predicts:

- *loading*: the feature bank of the stage's videos, computed from the store's dimensions and step counts (a store
  of sequences is read whole, then gathered, so both count);
- *training*: parameters with their gradients and Adam's two moments, plus the activations autograd keeps for one
  batch. Activations are measured, not guessed: one forward pass at two small batch sizes records the bytes of every
  tensor saved for backward; the difference gives the cost per sample, scaled to the configured batch size (with its
  negatives) and doubled for the gradients of those activations during backward.

A job that does not fit stops with one message giving the figures and the settings that change them.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from extractors.feature_store import MODALITIES, FeatureStore
from training.data.sampler import ClassBalancedSampler

log = logging.getLogger("avzsl.memory")

RUNTIME_MB = 400  # the interpreter, torch and h5py themselves
MB = 1 << 20


class MemoryBudgetError(ValueError):
    pass


def loading_bytes(store: FeatureStore, rows: np.ndarray, sequences: bool) -> int:
    """Peak bytes of loading ``rows`` of ``store`` into a feature bank."""
    total = 0
    for m in MODALITIES:
        d = store.dims[m] * 4
        total += len(rows) * d
        if sequences and store.has_sequences:
            lengths = store.lengths(m)
            total += int(lengths.sum()) * d + int(lengths[rows].sum()) * d
    return total


def check_loading_memory(store: FeatureStore, rows: np.ndarray, sequences: bool, mem_mb: int) -> None:
    need = loading_bytes(store, rows, sequences) / MB + RUNTIME_MB
    if need > mem_mb:
        raise MemoryBudgetError(
            f"loading {len(rows)} videos of {store.path} needs about {need:.0f} MB, more than the job's "
            f"{mem_mb} MB: raise training.mem_mb in the configuration (or train on means: a model without sequences)")


def check_training_memory(cfg, data, model: torch.nn.Module, mem_mb: int) -> dict:
    """Estimate the job's peak memory; raise :class:`MemoryBudgetError` when it exceeds ``mem_mb``. Returns the
    estimate in MB, by part."""
    bank = sum(t.numel() * t.element_size() for t in _bank_tensors(data))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    small = [2, 4] if len(data.train_idx) >= 4 else [1, 2]
    measured = [_batch_bytes(model, data, n, cfg) for n in small]
    per_sample = max(0.0, (measured[1] - measured[0]) / (small[1] - small[0]))
    fixed = max(0.0, measured[0] - per_sample * small[0])
    activations = 2 * (fixed + per_sample * cfg.train.batch_size)
    estimate = {"features": bank / MB, "parameters_and_optimiser": 4 * params / MB,
                "activations": activations / MB, "runtime": RUNTIME_MB}
    total = sum(estimate.values())
    log.info("memory estimate: %.0f MB (features %.0f, parameters and optimiser %.0f, activations of a batch of %d "
             "%.0f) of the job's %d MB", total, estimate["features"], estimate["parameters_and_optimiser"],
             cfg.train.batch_size, estimate["activations"], mem_mb)
    if total > mem_mb:
        raise MemoryBudgetError(
            f"training {cfg.model} needs about {total:.0f} MB (features {estimate['features']:.0f}, activations of a "
            f"batch of {cfg.train.batch_size}: {estimate['activations']:.0f}), more than the job's {mem_mb} MB: "
            "lower train.batch_size (or train.max_steps) or raise training.mem_mb in the configuration")
    return estimate


def _bank_tensors(data) -> list[torch.Tensor]:
    bank = data.bank
    return [*bank.means.values(), *bank.flat.values(), data.text]


def _batch_bytes(model: torch.nn.Module, data, n: int, cfg) -> int:
    """Bytes of a batch of ``n`` (with negatives) plus every tensor autograd saves for its backward pass.

    Runs on a copy of the model with the RNG state restored afterwards, so the run itself is unchanged."""
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[(t.data_ptr(), tuple(t.shape), t.dtype)] = t.numel() * t.element_size()
        return t

    device = data.train_idx.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        generator = torch.Generator(device=device).manual_seed(0)
        sampler = ClassBalancedSampler(data.train_labels, n, 1, generator)
        pos = sampler.epoch()[0]
        neg = sampler.negatives(pos[None])[0] if getattr(model, "needs_negatives", False) and sampler.n_classes > 1 \
            else None
        batch = data.batch(pos, neg, crop="random", generator=generator)
        probe = copy.deepcopy(model)
        probe.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if type(probe).loss is not _base_loss():
                loss, _ = probe.loss(batch)
                del loss
            else:  # models that train through their own step (e.g. generative ones)
                probe.train_step(batch, probe.configure_optimizers(cfg.train.lr, cfg.train.weight_decay))
    inputs = _tensor_bytes(batch) + (_tensor_bytes(batch.neg) if batch.neg is not None else 0)
    return inputs + sum(saved.values())


def _tensor_bytes(batch) -> int:
    return sum(v.numel() * v.element_size() for k, v in vars(batch).items()
               if isinstance(v, torch.Tensor) and k != "neg")


def _base_loss():
    from training.models.base import ZSLModel

    return ZSLModel.loss
