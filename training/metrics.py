"""The evaluation protocol of the audio-visual GZSL benchmark, in one place.

- Prediction is the nearest class embedding among the classes of the evaluated split only (seen ∪ unseen).
- Calibrated stacking: a constant β is *added to the distances of seen classes*; β is searched on a grid
  (default {0, 0.2, …, 3.0}) and the β with the best harmonic mean is kept.
- Accuracy is the mean over classes of per-class accuracy. S averages seen classes, U unseen classes (both searched
  among all classes of the split); HM = 2SU / (S + U).
- ZSL: samples of unseen classes, searched among unseen classes only (β plays no part).
- Stage 1 picks, per epoch, β by validation HM, and the epoch with the best validation HM; stage 2 is evaluated on the
  test split at that epoch with that β (see :mod:`training.engine`).
- Models scored in several modes (e.g. audio, video, both) get one β per mode; the β carried to the test is their
  mean, as the reference evaluation does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch


def beta_grid(start: float = 0.0, stop: float = 3.0, steps: int = 16) -> torch.Tensor:
    return torch.linspace(start, stop, steps, dtype=torch.float64)


DEFAULT_BETAS = beta_grid()


@dataclass
class GZSLResult:
    """Fractions in [0, 1]; ``beta`` is the calibration the GZSL numbers were computed with."""

    seen: float
    unseen: float
    hm: float
    zsl: float
    beta: float
    per_beta: list[dict] = field(default_factory=list)

    def percent(self) -> dict:
        return {"S": 100 * self.seen, "U": 100 * self.unseen, "HM": 100 * self.hm, "ZSL": 100 * self.zsl,
                "beta": self.beta}

    def to_dict(self) -> dict:
        return asdict(self)


def harmonic_mean(s: torch.Tensor | float, u: torch.Tensor | float) -> torch.Tensor:
    s, u = torch.as_tensor(s, dtype=torch.float64), torch.as_tensor(u, dtype=torch.float64)
    total = s + u
    return torch.where(total > 0, 2 * s * u / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.zeros_like(total))


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, classes: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Accuracy of each class in ``classes`` (NaN for a class without samples)."""
    classes = torch.as_tensor(classes, device=target.device, dtype=torch.long)
    n = int(max(int(target.max()) if len(target) else 0, int(classes.max()) if len(classes) else 0)) + 1
    correct = torch.bincount(target, weights=(pred == target).double(), minlength=n)
    count = torch.bincount(target, minlength=n).double()
    acc = correct / count  # NaN where count == 0
    return acc[classes]


def mean_class_accuracy(pred: torch.Tensor, target: torch.Tensor, classes: Sequence[int] | torch.Tensor) -> float:
    """Mean of per-class accuracies over the given classes that have samples."""
    acc = per_class_accuracy(pred, target, classes)
    acc = acc[~torch.isnan(acc)]
    return float(acc.mean()) if len(acc) else 0.0


def _predict(dist: torch.Tensor, class_ids: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    return class_ids[(dist if offset is None else dist + offset).argmin(dim=1)]


def gzsl_sweep(dist: torch.Tensor, class_ids: Sequence[int], target: torch.Tensor, seen: Sequence[int],
               unseen: Sequence[int], betas: torch.Tensor = DEFAULT_BETAS) -> list[dict]:
    """S, U and HM for every β. ``dist`` is (N, C): distances to ``class_ids`` (the split's classes)."""
    class_ids_t = torch.as_tensor(class_ids, device=dist.device, dtype=torch.long)
    seen_mask = torch.isin(class_ids_t, torch.as_tensor(seen, device=dist.device, dtype=torch.long))
    dist = dist.double()
    out = []
    for beta in betas.tolist():
        pred = _predict(dist, class_ids_t, beta * seen_mask.double())
        s = mean_class_accuracy(pred, target, seen)
        u = mean_class_accuracy(pred, target, unseen)
        out.append({"beta": beta, "seen": s, "unseen": u, "hm": float(harmonic_mean(s, u))})
    return out


def zsl_accuracy(dist: torch.Tensor, class_ids: Sequence[int], target: torch.Tensor, unseen: Sequence[int]) -> float:
    """Samples of unseen classes, nearest among unseen classes only."""
    class_ids_t = torch.as_tensor(class_ids, device=dist.device, dtype=torch.long)
    unseen_t = torch.as_tensor(unseen, device=dist.device, dtype=torch.long)
    cols = torch.isin(class_ids_t, unseen_t)
    rows = torch.isin(target, unseen_t)
    if not rows.any():
        return 0.0
    pred = _predict(dist[rows][:, cols], class_ids_t[cols])
    return mean_class_accuracy(pred, target[rows], unseen)


def evaluate(dist: torch.Tensor, class_ids: Sequence[int], target: torch.Tensor, seen: Sequence[int],
             unseen: Sequence[int], beta: float | None = None, betas: torch.Tensor = DEFAULT_BETAS,
             calibrated: bool = True) -> GZSLResult:
    """Full protocol on one distance matrix: search β (``beta=None``) or apply a given β."""
    if not calibrated:
        betas = torch.zeros(1, dtype=torch.float64)
    grid = betas if beta is None else torch.tensor([beta], dtype=torch.float64)
    sweep = gzsl_sweep(dist, class_ids, target, seen, unseen, grid)
    best = max(range(len(sweep)), key=lambda i: (sweep[i]["hm"], -i))  # first β among equals
    b = sweep[best]
    return GZSLResult(seen=b["seen"], unseen=b["unseen"], hm=b["hm"],
                      zsl=zsl_accuracy(dist, class_ids, target, unseen), beta=b["beta"],
                      per_beta=sweep if beta is None else [])


@dataclass
class ModeResults:
    """Per-mode results and the β carried forward (mean of per-mode best β)."""

    by_mode: dict[str, GZSLResult]
    primary: str

    @property
    def main(self) -> GZSLResult:
        return self.by_mode[self.primary]

    @property
    def combined_beta(self) -> float:
        return float(sum(r.beta for r in self.by_mode.values()) / len(self.by_mode))


def evaluate_modes(dists: Mapping[str, torch.Tensor], primary: str, class_ids: Sequence[int], target: torch.Tensor,
                   seen: Sequence[int], unseen: Sequence[int], beta: float | None = None,
                   betas: torch.Tensor = DEFAULT_BETAS, calibrated: bool = True) -> ModeResults:
    if primary not in dists:
        raise KeyError(f"primary evaluation mode {primary!r} missing from {sorted(dists)}")
    return ModeResults({m: evaluate(d, class_ids, target, seen, unseen, beta, betas, calibrated)
                        for m, d in dists.items()}, primary)
