"""Small-sample statistics over seeds: t-intervals, paired t-test, exact Wilcoxon signed-rank."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LEVEL = 0.95


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t confidence interval of the mean (n - 1 dof); (nan, nan) for n < 2."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    from scipy import stats  # imported when a report needs it: scipy is slow to import

    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * _standard_error(values)
    return mean - half, mean + half


def paired_t_pvalue(differences: Sequence[float]) -> float:
    """Two-sided one-sample t-test of mean difference = 0; nan for n < 2."""
    differences = np.asarray(differences, dtype=float)
    n = len(differences)
    if n < 2:
        return math.nan
    mean, se = float(differences.mean()), _standard_error(differences)
    if se == 0:  # every pair differs by the same amount: the limit of t -> 0 or t -> inf
        return 1.0 if mean == 0 else 0.0
    from scipy import stats

    return float(2 * stats.t.sf(abs(mean / se), n - 1))


def wilcoxon_exact_pvalue(differences: Sequence[float]) -> float:
    """Two-sided exact Wilcoxon signed-rank p: zero differences dropped, tied |d| get midranks,
    p from the exact distribution of the signed-rank sum under random signs. nan for n < 2."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2:
        return math.nan
    nonzero = differences[differences != 0]
    if len(nonzero) == 0:
        return 1.0
    # midranks are whole or half numbers: doubled they are integers, so counts stay exact
    from scipy import stats

    doubled = [round(2 * r) for r in stats.rankdata(np.abs(nonzero))]
    counts = _subset_sum_counts(doubled)
    observed = sum(r for r, d in zip(doubled, nonzero, strict=True) if d > 0)
    total = 2 ** len(doubled)
    lower = sum(counts[: observed + 1]) / total
    upper = sum(counts[observed:]) / total
    return min(1.0, 2 * min(lower, upper))


def paired_difference(differences: Sequence[float], level: float = LEVEL) -> dict[str, float]:
    """n, mean, t-interval, paired t-test p and exact Wilcoxon p of paired differences."""
    differences = np.asarray(differences, dtype=float)
    low, high = t_interval(differences, level)
    return {
        "n_pairs": len(differences),
        "mean_diff": float(differences.mean()) if len(differences) else math.nan,
        "ci_low": low,
        "ci_high": high,
        "t_p": paired_t_pvalue(differences),
        "wilcoxon_p": wilcoxon_exact_pvalue(differences),
    }


def verdict(n_pairs: int, low: float, high: float) -> str:
    """'win' if the interval lies below 0 (lower is better), 'loss' if above, else 'tie'."""
    if n_pairs < 2:
        return "n<2"
    if high < 0:
        return "win"
    if low > 0:
        return "loss"
    return "tie"


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) / math.sqrt(len(values))


def _subset_sum_counts(weights: list[int]) -> list[int]:
    """counts[s] = number of subsets of weights summing to s."""
    counts = [1] + [0] * sum(weights)
    for weight in weights:
        for s in range(len(counts) - 1, weight - 1, -1):
            counts[s] += counts[s - weight]
    return counts
