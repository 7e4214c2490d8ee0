"""The leaderboard's statistics against hand computations on small tables: ranks within
(target, seed) cells, the Friedman test, Nemenyi's critical difference, wins/ties/losses."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from icnn_bench.report.ranks import critical_difference, friedman, leaderboard, rank_table
from icnn_bench.report.tables import paired_comparisons

# KL per (target, seed) and method; lower is better
VALUES = {
    ("gumbel", 0): {"pgd": 0.3, "softplus": 0.5, "lift": 0.1},
    ("gumbel", 1): {"pgd": 0.2, "softplus": 0.4, "lift": 0.2},  # a tie: pgd and lift 1.5
    ("laplace", 0): {"pgd": 0.1, "softplus": 0.2, "lift": 0.3},
    ("laplace", 1): {"pgd": 0.4, "softplus": None, "lift": 0.1},  # softplus failed: last
}


def runs_table(values=VALUES) -> pd.DataFrame:
    rows = []
    for (target, seed), by_method in values.items():
        for method, kl in by_method.items():
            status = "ok" if kl is not None else "failed"
            rows.append({"target": target, "method": method, "method_name": method,
                         "seed": seed, "status": status, "kl": kl})  # fmt: skip
    return pd.DataFrame(rows)


def test_ranks_within_cells_by_hand():
    ranks, headline, dropped = rank_table(runs_table())
    assert headline == {"gumbel": "kl", "laplace": "kl"} and dropped == 0
    expected = {
        ("gumbel", 0): {"pgd": 2, "softplus": 3, "lift": 1},
        ("gumbel", 1): {"pgd": 1.5, "softplus": 3, "lift": 1.5},
        ("laplace", 0): {"pgd": 1, "softplus": 2, "lift": 3},
        ("laplace", 1): {"pgd": 2, "softplus": 3, "lift": 1},
    }
    for cell, row in expected.items():
        assert ranks.loc[cell].to_dict() == row
    assert ranks.mean().to_dict() == {"pgd": 1.625, "softplus": 2.75, "lift": 1.625}


def test_friedman_by_hand_and_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    ranks, _, _ = rank_table(runs_table())
    statistic, p = friedman(ranks)
    n, k = 4, 3
    sums = [6.5, 11, 6.5]  # pgd, softplus, lift
    plain = 12 / (n * k * (k + 1)) * sum(s * s for s in sums) - 3 * n * (k + 1)
    ties = 2**3 - 2  # one cell with a pair tied
    corrected = plain / (1 - ties / (n * k * (k * k - 1)))
    assert statistic == pytest.approx(corrected)
    assert p == pytest.approx(stats.chi2.sf(corrected, k - 1))
    reference = stats.friedmanchisquare(*(ranks[c] for c in ranks.columns))
    assert statistic == pytest.approx(reference.statistic)
    assert p == pytest.approx(reference.pvalue)


def test_two_methods_get_a_friedman_test_too():
    two = {cell: {m: v for m, v in row.items() if m != "softplus"} for cell, row in VALUES.items()}
    ranks, _, _ = rank_table(runs_table(two))
    statistic, p = friedman(ranks)
    # lift beats pgd in 2 cells, loses 1, ties 1: rank sums 5.5 (lift), 6.5 (pgd)
    plain = 12 / (4 * 2 * 3) * (5.5**2 + 6.5**2) - 3 * 4 * 3
    assert statistic == pytest.approx(plain / (1 - 6 / (4 * 2 * 3)))
    assert 0 < p < 1


def test_the_critical_difference_matches_demsars_table():
    # Demšar (2006), Table 5(a): q_0.05 = 2.343 for 3 classifiers, 3.031 for 8, 3.102 for 9
    assert critical_difference(3, 4) == pytest.approx(2.343 * math.sqrt(3 * 4 / 24), rel=1e-3)
    assert critical_difference(8, 40) == pytest.approx(3.031 * math.sqrt(8 * 9 / 240), rel=1e-3)
    assert critical_difference(9, 40) == pytest.approx(3.102 * math.sqrt(9 * 10 / 240), rel=1e-3)


def test_an_incomplete_cell_is_left_out_and_counted():
    values = dict(VALUES)
    values[("laplace", 2)] = {"pgd": 0.1, "lift": 0.2}  # softplus never ran
    ranks, _, dropped = rank_table(runs_table(values))
    assert dropped == 1 and len(ranks) == 4


def test_the_wins_matrix_holds_every_ordered_pair():
    values = {
        (target, seed): {"pgd": 0.3 + 0.01 * seed, "softplus": 0.5 + 0.02 * seed,
                         "lift": 0.1 + 0.015 * seed}
        for target in ("a", "b") for seed in range(3)
    }  # fmt: skip
    runs = runs_table(values)
    board = leaderboard(runs, paired_comparisons(runs))
    wins = board.wins.set_index(["method", "opponent"])
    assert len(wins) == 6  # 3 methods: every ordered pair
    assert tuple(wins.loc[("lift", "pgd")][["wins", "ties", "losses"]]) == (2, 0, 0)
    assert tuple(wins.loc[("pgd", "lift")][["wins", "ties", "losses"]]) == (0, 0, 2)
    assert tuple(wins.loc[("softplus", "pgd")][["wins", "ties", "losses"]]) == (0, 0, 2)
    assert board.mean_ranks.index.tolist() == ["lift", "pgd", "softplus"]
    assert board.nemenyi is not None and board.nemenyi.shape == (3, 3)
