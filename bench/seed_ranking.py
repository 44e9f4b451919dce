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
from scipy import stats

from training.report.records import SummaryRow, read_summary_csv


def seed_tables(rows: list[SummaryRow], metric: str) -> tuple[list[str], list[int], np.ndarray]:
    """(models, seeds, values[model, seed]) over the models present for every seed."""
    by = defaultdict(dict)
    for r in rows:
        by[r.display_name][r.seed] = r.metric(metric)
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
    rows = [r for r in read_summary_csv(a.summary_csv)
            if (a.dataset is None or r.dataset == a.dataset)
            and (a.feature_set is None or r.feature_set == a.feature_set)]
    for metric, chance in (("HM", a.chance_hm), ("ZSL", a.chance_zsl)):
        models, seeds, v = seed_tables(rows, metric)
        if len(seeds) < 2:
            raise SystemExit(f"need at least two seeds per model, found {seeds}")
        print(f"## {metric}: {len(models)} models, seeds {seeds}")
        for (i, si), (j, sj) in itertools.combinations(enumerate(seeds), 2):
            rho = stats.spearmanr(v[:, i], v[:, j]).statistic
            tau = stats.kendalltau(v[:, i], v[:, j], variant="b").statistic
            print(f"seeds {si}-{sj}: Spearman {rho:.2f}, Kendall tau-b {tau:.2f}")
        mean, std = v.mean(1), v.std(1, ddof=1)
        for k in np.argsort(-mean):
            margin = f", {mean[k] / chance:.1f}x chance" if chance else ""
            print(f"  {models[k]:32s} {mean[k]:5.1f} ± {std[k]:4.1f}  min {v[k].min():5.1f}{margin}")


if __name__ == "__main__":
    main()
