"""The run directory: the one module that names, writes and reads a run's files.

    results/runs/<dataset>/<feature set>/<model>/seed<k>/
        stage1/   config.yaml  log.jsonl  checkpoint.pt  selection.json
        stage2/   config.yaml  log.jsonl  checkpoint.pt  model.pt
        test.json  test_predictions.npz

``config.yaml``: the resolved run configuration with seed, git SHA, code version and the content identity of the
inputs (the run header). ``log.jsonl``: one line per epoch. ``checkpoint.pt``: everything to resume a stage.
``selection.json``: stage 1's choice of epoch and β (:class:`Selection`). ``model.pt``: stage 2's weights.
``test.json``: the test-split result that goes into the tables (:class:`TestResult`). ``test_predictions.npz``: the
per-video test predictions behind it, for the report's confusion matrices and embedding maps
(:func:`write_predictions`).

Imports no torch at module level: the workflow takes its file names from here while it builds the DAG.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from avzsl.common import atomic_path, write_json_atomic, write_text_atomic

RUNS = "results/runs"
CONFIG = "config.yaml"
LOG = "log.jsonl"
CHECKPOINT = "checkpoint.pt"
SELECTION = "selection.json"
MODEL = "model.pt"
TEST = "test.json"
PREDICTIONS = "test_predictions.npz"


class RunFileError(ValueError):
    pass


def run_path(dataset: str, feature_set: str, model: str, seed: int | str) -> str:
    return f"{RUNS}/{dataset}/{feature_set}/{model}/seed{seed}"


def stage_path(run: str | Path, stage: int | str) -> str:
    return f"{run}/stage{stage}"


def selection_path(run: str | Path) -> str:
    return f"{stage_path(run, 1)}/{SELECTION}"


def model_path(run: str | Path) -> str:
    return f"{stage_path(run, 2)}/{MODEL}"


def test_path(run: str | Path) -> str:
    return f"{run}/{TEST}"


def predictions_path(run: str | Path) -> str:
    return f"{run}/{PREDICTIONS}"


# ------------------------------------------------------------------------------------------------ records
@dataclass
class _Record:
    @classmethod
    def from_dict(cls, d: dict, source: str = ""):
        known = {f.name for f in fields(cls)}
        missing = sorted(f.name for f in fields(cls)
                         if f.name not in d and f.default is MISSING and f.default_factory is MISSING)
        if missing:
            raise RunFileError(f"{source or cls.__name__}: missing {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: str | Path):
        try:
            return cls.from_dict(json.loads(Path(path).read_text()), str(path))
        except json.JSONDecodeError as e:
            raise RunFileError(f"{path} is not valid JSON ({e}); delete it and rerun the rule that writes it") from None


@dataclass
class Selection(_Record):
    """Stage 1's choice: the epoch with the best validation HM (0-based) and its calibration β."""

    best_epoch: int
    beta: float
    val: dict = field(default_factory=dict)
    epochs: int = 0
    model: str = ""
    seed: int = 0
    code_version: str = ""


@dataclass
class TestResult(_Record):
    """The stage-2 model on the test split with the stage-1 β: one row of the results tables."""

    dataset: str
    feature_set: str
    model: str
    display_name: str
    family: str
    seed: int
    S: float
    U: float
    HM: float
    ZSL: float
    beta: float
    best_epoch: int
    val: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)
    primary_mode: str = ""  # the mode of ``modes`` that S, U, HM and ZSL come from
    inputs: str = "mean"
    counts: dict = field(default_factory=dict)
    git_sha: str | None = None
    code_version: str = ""
    config: dict = field(default_factory=dict)


def as_selection(selection: Selection | dict) -> Selection:
    return selection if isinstance(selection, Selection) else Selection.from_dict(selection)


# ------------------------------------------------------------------------------------------------ stage files
def write_header(stage_dir: str | Path, header: dict) -> None:
    write_text_atomic(Path(stage_dir) / CONFIG, yaml.safe_dump(header, sort_keys=False))


def read_header(stage_dir: str | Path) -> dict:
    return yaml.safe_load((Path(stage_dir) / CONFIG).read_text())


def rewrite_log(stage_dir: str | Path, history: list[dict]) -> None:
    write_text_atomic(Path(stage_dir) / LOG, "".join(_jsonl(r) for r in history))


def append_log(stage_dir: str | Path, record: dict) -> None:
    with open(Path(stage_dir) / LOG, "a") as f:
        f.write(_jsonl(record))


def read_log(stage_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(stage_dir) / LOG).read_text().splitlines()]


def _jsonl(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def save_checkpoint(stage_dir: str | Path, blob: dict) -> None:
    import torch

    with atomic_path(Path(stage_dir) / CHECKPOINT, suffix=".pt") as tmp:
        torch.save(blob, tmp)


def load_checkpoint(stage_dir: str | Path) -> dict | None:
    """The stage's checkpoint (tensors and plain data only: ``weights_only``), or None when there is none."""
    import torch

    path = Path(stage_dir) / CHECKPOINT
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def discard_checkpoint(stage_dir: str | Path) -> None:
    (Path(stage_dir) / CHECKPOINT).unlink(missing_ok=True)


def save_model(path: str | Path, state_dict: dict, header: dict, selection: Selection, dims: dict) -> None:
    import torch

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"model": state_dict, "header": header, "selection": selection.to_dict(), "dims": dims}, tmp)


def load_model(path: str | Path, device) -> dict:
    import torch

    return torch.load(path, map_location=device, weights_only=True)


# ------------------------------------------------------------------------------------------------ test predictions
# Arrays of test_predictions.npz. Class ids index ``class_names`` (the split's all_class.txt); a prediction of -1 means
# none (pred_zsl of a seen-class video). Embeddings are float16 and present only when the model embeds videos and
# classes in one space (its primary evaluation mode's tensors have the same width).
PREDICTION_ARRAYS = ("class_names", "labels", "seen", "unseen", "pred_gzsl", "pred_zsl", "beta")
EMBEDDING_ARRAYS = ("video_embedding", "class_embedding", "class_embedding_ids")


def write_predictions(path: str | Path, arrays: dict) -> None:
    """Write the per-video test predictions (:data:`PREDICTION_ARRAYS`, optionally :data:`EMBEDDING_ARRAYS`)."""
    import numpy as np

    missing = [k for k in PREDICTION_ARRAYS if k not in arrays]
    if missing:
        raise RunFileError(f"{path}: predictions without {missing}")
    unknown = sorted(set(arrays) - set(PREDICTION_ARRAYS) - set(EMBEDDING_ARRAYS))
    if unknown:
        raise RunFileError(f"{path}: unknown prediction arrays {unknown}")
    out = {k: np.asarray(v) for k, v in arrays.items()}
    for k in ("labels", "seen", "unseen", "pred_gzsl", "pred_zsl", "class_embedding_ids"):
        if k in out:
            out[k] = out[k].astype(np.int32)
    for k in ("video_embedding", "class_embedding"):
        if k in out:
            out[k] = out[k].astype(np.float16)
    out["class_names"] = np.asarray([str(c) for c in out["class_names"]], dtype=str)
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **out)


def read_predictions(path: str | Path) -> dict:
    """The arrays of a predictions file (numpy arrays; ``beta`` a float)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path} is not a readable predictions file ({e}); delete it and rerun evaluate") from None
    missing = [k for k in PREDICTION_ARRAYS if k not in arrays]
    if missing:
        raise RunFileError(f"{path}: missing {missing}")
    arrays["beta"] = float(arrays["beta"])
    return arrays
