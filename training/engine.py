"""Training and evaluation of one run under the two-stage protocol.

Stage 1 trains on stage_1_train for ``epochs`` epochs; after each epoch the validation split picks β (calibrated
stacking) and scores HM; the epoch with the best validation HM and its β are the *selection*. Stage 2 retrains from
scratch on train + val for exactly ``best_epoch + 1`` epochs (the same 0-based epoch index the reference loads) and is
evaluated once, on the test split, with the selected β.

The run directory's files are named, written and read by :mod:`training.run_dir`. A checkpoint is resumed only when it was made from exactly the same inputs:
the same configuration, code version, feature, split and text contents and, in stage 2, the same stage-1 selection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from avzsl.common import code_version, config_hash, file_digest, git_sha
from extractors.splits import read_splits
from training import run_dir as rd
from training.config import RunConfig, check_hparam_types
from training.data.features import EvalSet, StageData, load_stage
from training.data.sampler import ClassBalancedSampler
from training.memory import check_training_memory
from training.metrics import ModeResults, beta_grid, evaluate_modes
from training.models import InputDims, ZSLModel, build_model, get_model_class
from training.run_dir import Selection, TestResult, as_selection

log = logging.getLogger("avzsl.train")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_for_data(cfg: RunConfig, data: StageData, device: torch.device) -> ZSLModel:
    bank = data.bank
    dims = InputDims(audio=bank.dims["audio"], video=bank.dims["video"], text=int(data.text.shape[1]),
                     audio_step_seconds=bank.step_seconds["audio"], video_step_seconds=bank.step_seconds["video"])
    model = build_model(cfg.model, dims, cfg.model_params).to(device)
    train_classes = torch.unique(data.train_labels)
    model.set_training_classes(train_classes, data.text[train_classes])
    return model


def load_data(cfg: RunConfig, stage: int, device: torch.device, mem_mb: int | None = None) -> StageData:
    cls = get_model_class(cfg.model)
    return load_stage(cfg.features, cfg.splits, cfg.text, stage, device, sequences=cls.needs_sequences,
                      max_steps=cfg.train.max_steps, eval_max_steps=cfg.train.eval_max_steps or cfg.train.max_steps,
                      mem_mb=mem_mb)


def _cap_batch_size(cfg: RunConfig, n_train: int) -> RunConfig:
    """A batch larger than the training set only repeats samples (the sampler draws with replacement) and costs
    memory in proportion: cap it at the training set, say so, and record the cap in the run's configuration."""
    if cfg.train.batch_size <= n_train:
        return cfg
    log.warning("batch_size %d is larger than the training set (%d videos): using batches of %d",
                cfg.train.batch_size, n_train, n_train)
    return replace(cfg, train=replace(cfg.train, batch_size=n_train))


@torch.no_grad()
def evaluate_split(model: ZSLModel, data: StageData, split: EvalSet, cfg: RunConfig,
                   beta: float | None = None, keep: dict | None = None) -> ModeResults:
    """Distances of every video of ``split`` to the split's classes, then the protocol of :mod:`training.metrics`.

    ``keep``: a dictionary that receives the primary mode's distances (``dist``) and, when the model embeds videos
    and classes in one space, their embeddings (``videos``, ``classes``)."""
    was_training = model.training
    model.eval()
    class_ids = split.class_ids
    class_text = data.text[torch.as_tensor(class_ids, device=data.text.device)]
    model.prepare_evaluation(class_ids, class_text, split.seen, split.unseen)
    classes = model.embed_classes(class_text)
    chunks: dict[str, list[torch.Tensor]] = {}
    primary = model.primary_mode
    shared = keep is not None and _shared_space(classes.get(primary))
    embedded = []
    for start in range(0, len(split.idx), cfg.train.eval_batch_size):
        batch = data.eval_batch(split.idx[start:start + cfg.train.eval_batch_size])
        videos = model.embed_videos(batch)
        for mode, d in model.distances(videos, classes).items():
            chunks.setdefault(mode, []).append(d)
        if shared:
            v = videos.get(primary)
            shared = _shared_space(v) and v.shape[1] == classes[primary].shape[1]
            embedded.append(v if shared else None)
    dists = {m: torch.cat(c) for m, c in chunks.items()}
    if keep is not None:
        keep["dist"] = dists[primary]
        if shared and embedded:
            keep["videos"], keep["classes"] = torch.cat(embedded), classes[primary]
    betas = beta_grid(cfg.train.beta_min, cfg.train.beta_max, cfg.train.beta_steps)
    result = evaluate_modes(dists, model.primary_mode, class_ids, split.labels, split.seen, split.unseen, beta=beta,
                            betas=betas, calibrated=model.calibrated_stacking)
    model.train(was_training)
    return result


def _shared_space(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 2 and t.is_floating_point()


def complete_config(cfg: RunConfig) -> RunConfig:
    """The run configuration with every model hyper-parameter spelled out (defaults included)."""
    declared = get_model_class(cfg.model).hparams
    check_hparam_types(declared, cfg.model_params, f"{cfg.model} model")
    return replace(cfg, model_params={**declared, **cfg.model_params})


def input_identity(cfg: RunConfig, stage: int, selection: dict | None = None) -> dict:
    """What a run's results depend on, by content: a checkpoint made from any other identity is never resumed.

    Paths are not enough: a rebuilt feature store, a changed split or a new stage-1 selection keeps its path."""
    identity = {"config": config_hash(cfg.to_dict()), "code_version": code_version(),
                "features": file_digest(cfg.features), "splits": read_splits(cfg.splits).digest(),
                "text": file_digest(cfg.text)}
    if stage == 2:
        identity["selection"] = config_hash(as_selection(selection).to_dict())
    return identity


def _run_header(cfg: RunConfig, stage: int, identity: dict) -> dict:
    return {"stage": stage, "seed": cfg.seed, "git_sha": git_sha(), "code_version": code_version(),
            "config_hash": identity["config"], "inputs": identity, "run": cfg.to_dict()}


def train_stage(cfg: RunConfig, stage: int, run_dir: str | Path, selection: Selection | dict | None = None,
                progress: bool = True, mem_mb: int | None = None, model_out: str | Path | None = None) -> dict:
    """Train one stage in ``run_dir``; resumes from its checkpoint when an earlier attempt on the same inputs was
    interrupted. ``mem_mb``: the job's memory budget; a run whose estimate exceeds it stops before training.
    Stage 2 writes its weights to ``model_out`` (default: the run directory's model file).

    Returns the selection (stage 1) or the final training record (stage 2), as plain dictionaries."""
    if stage not in (1, 2):
        raise ValueError("stage must be 1 or 2")
    if stage == 2 and selection is None:
        raise ValueError("stage 2 needs the stage-1 selection (best epoch and beta)")
    selection = as_selection(selection) if selection is not None else None
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = complete_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    identity = input_identity(cfg, stage, selection)

    data = load_data(cfg, stage, device, mem_mb)
    cfg = _cap_batch_size(cfg, len(data.train_idx))
    model = build_for_data(cfg, data, device)
    if mem_mb:
        check_training_memory(cfg, data, model, mem_mb)
    header = _run_header(cfg, stage, identity)
    rd.write_header(run_dir, header)
    optimizers = model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
    schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", patience=cfg.train.patience,
                                                             factor=cfg.train.factor)
                  for o in optimizers] if cfg.train.scheduler == "plateau" else []
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    sampler = ClassBalancedSampler(data.train_labels, cfg.train.batch_size, cfg.train.n_batches, generator)
    epochs = cfg.train.epochs if stage == 1 else selection.best_epoch + 1

    state = _resume(run_dir, identity, model, optimizers, schedulers, generator) or \
        {"epoch": -1, "best": None, "history": []}
    rd.rewrite_log(run_dir, state["history"])
    log.info("%s stage %d on %s: %d training videos (%d classes), %d validation videos, epochs %d..%d",
             cfg.model, stage, device, len(data.train_idx), sampler.n_classes, len(data.val.idx),
             state["epoch"] + 1, epochs - 1)

    from tqdm import tqdm

    bar = tqdm(range(state["epoch"] + 1, epochs), desc=f"{cfg.model} stage {stage}", unit="epoch",
               disable=not progress, initial=state["epoch"] + 1, total=epochs, mininterval=1)
    for epoch in bar:
        t0 = time.time()
        losses = train_epoch(model, data, sampler, optimizers, generator)
        val = evaluate_split(model, data, data.val, cfg)
        for s in schedulers:
            s.step(val.main.hm)
        stats = {k: losses.pop(k) for k in [k for k in losses if "." in k]}  # e.g. CSGM's eta_mean.a_attention
        record = {"epoch": epoch, "stage": stage, "lr": optimizers[0].param_groups[0]["lr"], "loss": losses,
                  **({"stats": stats} if stats else {}),
                  "val": {m: r.percent() for m, r in val.by_mode.items()}, "beta": val.combined_beta,
                  "seconds": round(time.time() - t0, 3)}
        state["history"].append(record)
        if stage == 1 and (state["best"] is None or val.main.hm > state["best"]["hm"]):
            state["best"] = {"epoch": epoch, "beta": val.combined_beta, "hm": val.main.hm,
                             "val": val.main.percent()}
        state["epoch"] = epoch
        _save_checkpoint(run_dir, state, identity, model, optimizers, schedulers, generator)
        rd.append_log(run_dir, record)
        bar.set_postfix(loss=f"{losses['loss']:.3f}", val_hm=f"{100 * val.main.hm:.2f}")
        log.info("epoch %d: loss %.4f | val S %.2f U %.2f HM %.2f ZSL %.2f (beta %.2f) | %.1fs", epoch,
                 losses["loss"], *(100 * x for x in (val.main.seen, val.main.unseen, val.main.hm, val.main.zsl)),
                 val.main.beta, record["seconds"])
        if stats:
            log.info("epoch %d training statistics: %s", epoch, ", ".join(f"{k} {v:.3g}" for k, v in sorted(stats.items())))
    bar.close()

    if stage == 1:
        best = state["best"]
        log.info("selected epoch %d, beta %.2f (val HM %.2f)", best["epoch"], best["beta"], best["val"]["HM"])
        return Selection(best_epoch=best["epoch"], beta=best["beta"], val=best["val"], epochs=epochs,
                         model=cfg.model, seed=cfg.seed, code_version=code_version()).to_dict()
    rd.save_model(model_out or run_dir / rd.MODEL, model.state_dict(), header, selection,
                  {"audio": model.dims.audio, "video": model.dims.video, "text": model.dims.text})
    return {"epochs": epochs, "selection": selection.to_dict(), "model": cfg.model, "seed": cfg.seed,
            "code_version": code_version()}


def train_epoch(model: ZSLModel, data: StageData, sampler: ClassBalancedSampler,
                optimizers: list[torch.optim.Optimizer], generator: torch.Generator,
                step: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict[str, float]:
    """One epoch: ``sampler.n_batches`` class-balanced batches (with negatives when the model uses them), one
    optimiser step each. Returns the mean of every logged loss. ``step``: a context manager factory wrapped around
    each optimiser step (the benchmarks time steps with it)."""
    model.train()
    pos = sampler.epoch()
    neg = sampler.negatives(pos) if model.needs_negatives else None
    sums: dict[str, torch.Tensor] = {}
    for b in range(sampler.n_batches):
        batch = data.batch(pos[b], None if neg is None else neg[b], crop="random", generator=generator)
        with step() if step else contextlib.nullcontext():
            logs = model.train_step(batch, optimizers)
        for k, v in logs.items():
            sums[k] = sums.get(k, 0) + v
    return {k: float(v) / sampler.n_batches for k, v in sums.items()}


def load_trained_model(cfg: RunConfig, model_path: str | Path, device: torch.device) -> tuple[ZSLModel, StageData]:
    """A stage-2 model's weights in a model built for the stage-2 data, with that data."""
    data = load_data(cfg, 2, device)
    model = build_for_data(cfg, data, device)
    model.load_state_dict(rd.load_model(model_path, device)["model"])
    return model, data


def evaluate_test(cfg: RunConfig, model_path: str | Path, selection: Selection | dict,
                  predictions_out: str | Path | None = None) -> dict:
    """Stage-2 model on the test split with the stage-1 β: the numbers that go into the results table.
    ``predictions_out``: where to write the per-video predictions behind them (:func:`training.run_dir.write_predictions`)."""
    selection = as_selection(selection)
    cfg = complete_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    model, data = load_trained_model(cfg, model_path, device)
    keep: dict = {}
    res = evaluate_split(model, data, data.test, cfg, beta=float(selection.beta), keep=keep)
    if predictions_out is not None:
        rd.write_predictions(predictions_out, prediction_arrays(data, keep, res.main.beta))
    cls = get_model_class(cfg.model)
    test = res.main.percent()
    return TestResult(
        dataset=cfg.dataset, feature_set=cfg.feature_set, model=cfg.model, display_name=cls.display_name,
        family=cls.family, seed=cfg.seed, **{k: test[k] for k in ("S", "U", "HM", "ZSL")},
        beta=float(selection.beta), best_epoch=int(selection.best_epoch), val=selection.val,
        modes={m: r.percent() for m, r in res.by_mode.items()}, primary_mode=model.primary_mode,
        inputs=data.bank.sequence_source if cls.needs_sequences else "mean",
        counts=data.counts, git_sha=git_sha(), code_version=code_version(), config=cfg.to_dict(),
    ).to_dict()


def prediction_arrays(data: StageData, keep: dict, beta: float) -> dict:
    """The per-video predictions of the primary mode as :func:`training.run_dir.write_predictions` takes them: GZSL
    among all classes of the split with ``beta`` added to seen-class distances (the β the test numbers were computed
    with), ZSL among unseen classes only."""
    split = data.test
    class_ids = torch.as_tensor(split.class_ids, dtype=torch.long)
    dist = keep["dist"].double().cpu()
    seen_mask = torch.isin(class_ids, torch.as_tensor(split.seen, dtype=torch.long))
    labels = split.labels.cpu()
    pred_gzsl = class_ids[(dist + beta * seen_mask.double()).argmin(dim=1)]
    unseen_cols = ~seen_mask
    pred_zsl = torch.full_like(labels, -1)
    rows = torch.isin(labels, class_ids[unseen_cols])
    if rows.any() and unseen_cols.any():
        pred_zsl[rows] = class_ids[unseen_cols][dist[rows][:, unseen_cols].argmin(dim=1)]
    out = {"class_names": list(data.class_names), "labels": labels.numpy(), "seen": list(split.seen),
           "unseen": list(split.unseen), "pred_gzsl": pred_gzsl.numpy(), "pred_zsl": pred_zsl.numpy(), "beta": beta}
    if "videos" in keep:
        out.update(video_embedding=keep["videos"].float().cpu().numpy(),
                   class_embedding=keep["classes"].float().cpu().numpy(), class_embedding_ids=class_ids.numpy())
    return out


# --------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(run_dir: Path, state: dict, identity: dict, model, optimizers, schedulers, generator) -> None:
    rd.save_checkpoint(run_dir, {
        "identity": identity, "state": state, "model": model.state_dict(),
        "optimizers": [o.state_dict() for o in optimizers], "schedulers": [s.state_dict() for s in schedulers],
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    })


def _resume(run_dir: Path, identity: dict, model, optimizers, schedulers, generator) -> dict | None:
    path = run_dir / rd.CHECKPOINT
    try:
        blob = rd.load_checkpoint(run_dir)
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint means starting over, not crashing
        log.warning("discarding unreadable checkpoint %s (%s); training from scratch", path, str(e).splitlines()[0])
        rd.discard_checkpoint(run_dir)
        return None
    if blob is None:
        return None
    old = blob.get("identity") or {}
    changed = sorted(k for k in set(identity) | set(old) if identity.get(k) != old.get(k))
    if changed:
        log.warning("discarding checkpoint %s: it was made from other inputs (%s changed); training from scratch",
                    path, ", ".join(changed))
        rd.discard_checkpoint(run_dir)
        return None
    model.load_state_dict(blob["model"])
    for o, s in zip(optimizers, blob["optimizers"]):
        o.load_state_dict(s)
    for sch, s in zip(schedulers, blob["schedulers"]):
        sch.load_state_dict(s)
    generator.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    if blob.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    log.info("resuming after epoch %d from %s", blob["state"]["epoch"], path)
    return blob["state"]
