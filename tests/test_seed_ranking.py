"""bench/seed_ranking.py on a small results table: the rank correlations it prints, checked by hand."""

from bench.seed_ranking import main
from training.report.records import SummaryRow, write_summary_csv


def _table(path, hm_by_seed: dict[int, list[float]]):
    rows = [SummaryRow("demo", "handcrafted", "ZSL", f"m{k}", f"M{k}", seed, hm, hm, hm, hm, 0.5, 1, "mean",
                       "git:x", "") for seed, values in hm_by_seed.items() for k, hm in enumerate(values)]
    write_summary_csv(path, rows)
    return path


def _correlations(capsys, path) -> list[str]:
    main([str(path)])
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("seeds ")]


def test_rank_correlations_by_hand(tmp_path, capsys):
    # seed 2 swaps the middle two models: d² = 0 + 1 + 1 + 0, one discordant pair of six
    lines = _correlations(capsys, _table(tmp_path / "s.csv", {1: [1.0, 2, 3, 4], 2: [1.0, 3, 2, 4], 3: [4.0, 3, 2, 1]}))
    rho, tau = 1 - 6 * 2 / (4 * 15), (5 - 1) / 6
    assert lines[:3] == [f"seeds 1-2: Spearman {rho:.2f}, Kendall tau-b {tau:.2f}",
                         "seeds 1-3: Spearman -1.00, Kendall tau-b -1.00",
                         f"seeds 2-3: Spearman {-rho:.2f}, Kendall tau-b {-tau:.2f}"]


def test_ties_share_their_mean_rank(tmp_path, capsys):
    # seed 1 ties the first two models (ranks 1.5, 1.5, 3, 4): tau-b with 5 untied pairs, n1 = 5, n2 = 6
    lines = _correlations(capsys, _table(tmp_path / "s.csv", {1: [1.0, 1, 2, 3], 2: [1.0, 2, 3, 4]}))
    # Spearman: Pearson's r of the ranks; centred ranks (-1, -1, 0.5, 1.5) and (-1.5, -0.5, 0.5, 1.5)
    rho = 4.5 / (4.5 * 5) ** 0.5
    assert lines[0] == f"seeds 1-2: Spearman {rho:.2f}, Kendall tau-b {5 / 30 ** 0.5:.2f}"
