"""The report's records: what the tables, figures and pages are made from, read once from the files that hold them.

:class:`SummaryRow` is one row of a results table (``results/<table>.csv``, this module writes and reads it);
:class:`Run` is one run directory (:mod:`training.run_dir` names and reads its files); :class:`DataRecord` is one
dataset and feature set's coverage and failed media (read by the modules that write them).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from avzsl.common import atomic_path
from training import run_dir as rd

METRICS = ("S", "U", "HM", "ZSL")
ONE_STEP = "mean as one step"  # a sequence model fed per-video means (no per-step features in the store)


@dataclass(frozen=True)
class SummaryRow:
    """One dataset, feature set, model and seed: the fields of ``test.json`` a results table shows."""

    dataset: str
    feature_set: str
    family: str
    model: str
    display_name: str
    seed: int
    S: float
    U: float
    HM: float
    ZSL: float
    beta: float
    best_epoch: int
    inputs: str
    code_version: str
    run: str

    @classmethod
    def from_result(cls, result: rd.TestResult, run: str | Path) -> SummaryRow:
        return cls(result.dataset, result.feature_set, result.family, result.model, result.display_name,
                   int(result.seed), *(float(getattr(result, m)) for m in METRICS), float(result.beta),
                   int(result.best_epoch), result.inputs, result.code_version, str(run))

    def metric(self, name: str) -> float:
        return getattr(self, name)


COLUMNS = tuple(f.name for f in fields(SummaryRow))
_FLOATS = (*METRICS, "beta")


def summary_rows(test_jsons: Sequence[str | Path]) -> list[SummaryRow]:
    """The rows of the given runs' ``test.json``, in the given order."""
    return [SummaryRow.from_result(rd.TestResult.read(p), Path(p).parent) for p in test_jsons]


def write_summary_csv(path: str | Path, rows: Sequence[SummaryRow]) -> None:
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([f"{getattr(r, k):.2f}" if k in _FLOATS else getattr(r, k) for k in COLUMNS])


def read_summary_csv(path: str | Path) -> list[SummaryRow]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = sorted(set(COLUMNS) - set(reader.fieldnames or ()))
        if missing:
            raise rd.RunFileError(f"{path}: not a results table (no {missing} columns)")
        rows = list(reader)
    types = {f.name: f.type for f in fields(SummaryRow)}
    convert = {"int": int, "float": float}
    return [SummaryRow(**{k: convert.get(types[k], str)(r[k]) for k in COLUMNS}) for r in rows]


@dataclass
class Run:
    """One run directory: its test result, stage 1's per-epoch log, both stages' headers and its predictions."""

    path: str
    result: rd.TestResult
    history: list[dict] | None  # None: no stage-1 log
    headers: dict[int, str]  # stage -> the text of its config.yaml, for the stages that have one
    predictions: Path | None  # None: no test predictions

    @property
    def primary_mode(self) -> str:
        """The mode the table reports: recorded in test.json; runs from before it was recorded ask the registry."""
        if self.result.primary_mode:
            return self.result.primary_mode
        try:
            from training.models import get_model_class

            return get_model_class(self.result.model).primary_mode
        except (KeyError, ValueError, ImportError):
            modes = sorted(self.history[0]["val"]) if self.history else []
            return modes[0] if modes else "video"

    def read_predictions(self) -> dict:
        return rd.read_predictions(self.predictions)


def read_run(test_json: str | Path, predictions: str | Path | None = None) -> Run:
    """The run whose ``test.json`` this is; ``predictions`` where its test predictions are (default: its own)."""
    run = str(Path(test_json).parent)
    stage1 = rd.stage_path(run, 1)
    history = rd.read_log(stage1) if (Path(stage1) / rd.LOG).exists() else None
    headers = {s: (Path(rd.stage_path(run, s)) / rd.CONFIG).read_text() for s in (1, 2)
               if (Path(rd.stage_path(run, s)) / rd.CONFIG).exists()}
    found = Path(predictions or rd.predictions_path(run))
    return Run(run, rd.TestResult.read(test_json), history, headers, found if found.exists() else None)


@dataclass
class DataRecord:
    """One dataset and feature set: the download coverage rows and the media extraction could not use (None: the
    file does not apply, e.g. no download list, or features imported rather than extracted)."""

    dataset: str
    feature_set: str
    coverage: list[dict] | None = None
    failed_media: list[tuple[str, str]] | None = None


def read_data(dataset: str, feature_set: str, failed_media: str | Path | None = None,
              coverage: str | Path | None = None) -> DataRecord:
    """``coverage``: the dataset's ``coverage.tsv``; ``failed_media``: the feature store's ``failed_media.tsv``."""
    from extractors.feature_store import read_failures_tsv
    from extractors.sources.download import read_coverage

    return DataRecord(dataset, feature_set,
                      read_coverage(coverage) if coverage and Path(coverage).exists() else None,
                      read_failures_tsv(failed_media) if failed_media and Path(failed_media).exists() else None)


def coverage_statements(data: Sequence[DataRecord]) -> Mapping[str, str]:
    """Per dataset, the sentence a results table states about the videos its numbers were computed on."""
    from extractors.sources.download import coverage_statement

    return {d.dataset: coverage_statement(d.coverage) for d in data if d.coverage is not None}
