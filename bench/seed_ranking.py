"""How stable is the models' ranking across training seeds? Reads a results table (``summary.csv``, one row per
dataset, feature set, model and seed) and prints, for HM and ZSL, Spearman's ρ and Kendall's τ-b between every pair
of seeds, each model's mean ± std, and its margin over chance.

    python -m bench.seed_ranking results/summary.csv [--dataset demo] [--feature-set handcrafted]
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict

import numpy as np

from training.results import read_csv


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (as Spearman's ρ needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    n1, n2 = concordant + discordant + ties_x, concordant + discordant + ties_y
    return float((concordant - discordant) / np.sqrt(n1 * n2)) if n1 and n2 else float("nan")


def seed_tables(rows: list[dict], metric: str) -> tuple[list[str], list[int], np.ndarray]:
    """(models, seeds, values[model, seed]) over the models present for every seed."""
    by = defaultdict(dict)
    for r in rows:
        by[r["display_name"]][int(r["seed"])] = float(r[metric])
    seeds = sorted({s for v in by.values() for s in v})
    models = [m for m, v in by.items() if all(s in v for s in seeds)]
    return models, seeds, np.array([[by[m][s] for s in seeds] for m in models])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("summary_csv")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--feature-set", default=None)
    ap.add_argument("--chance-hm", type=float, default=None, help="chance HM in percent (printed margins)")
    ap.add_argument("--chance-zsl", type=float, default=None, help="chance ZSL in percent")
    a = ap.parse_args(argv)
    rows = [r for r in read_csv(a.summary_csv)
            if (a.dataset is None or r["dataset"] == a.dataset)
            and (a.feature_set is None or r["feature_set"] == a.feature_set)]
    for metric, chance in (("HM", a.chance_hm), ("ZSL", a.chance_zsl)):
        models, seeds, v = seed_tables(rows, metric)
        if len(seeds) < 2:
            raise SystemExit(f"need at least two seeds per model, found {seeds}")
        print(f"## {metric}: {len(models)} models, seeds {seeds}")
        for (i, si), (j, sj) in itertools.combinations(enumerate(seeds), 2):
            print(f"seeds {si}-{sj}: Spearman {spearman(v[:, i], v[:, j]):.2f}, "
                  f"Kendall tau-b {kendall_tau_b(v[:, i], v[:, j]):.2f}")
        mean, std = v.mean(1), v.std(1, ddof=1)
        for k in np.argsort(-mean):
            margin = f", {mean[k] / chance:.1f}x chance" if chance else ""
            print(f"  {models[k]:32s} {mean[k]:5.1f} ± {std[k]:4.1f}  min {v[k].min():5.1f}{margin}")


if __name__ == "__main__":
    main()
