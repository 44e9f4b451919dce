import numpy as np
import pytest

from bench.seed_ranking import average_ranks, kendall_tau_b, spearman


def test_rank_correlations_by_hand():
    x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    assert spearman(x, y) == pytest.approx(1 - 6 * 2 / (4 * 15))  # d² = 0 + 1 + 1 + 0
    assert kendall_tau_b(x, y) == pytest.approx((5 - 1) / 6)  # one discordant pair of six
    assert spearman(x, -x) == pytest.approx(-1) and kendall_tau_b(x, -x) == pytest.approx(-1)


def test_ties_share_their_mean_rank():
    assert average_ranks(np.array([3.0, 1, 3, 2])).tolist() == [3.5, 1, 3.5, 2]
    # tau-b with one tie in x: 5 untied pairs, all concordant; n1 = 5, n2 = 6
    assert kendall_tau_b(np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 3, 4])) == pytest.approx(5 / np.sqrt(30))
