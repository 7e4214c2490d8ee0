"""The leaderboard: every method ranked within each (target, seed) cell on the target's headline
metric, mean ranks over cells, a Friedman test and Nemenyi's critical difference (Demšar
2006), and the wins/ties/losses of every ordered pair of methods from the paired intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from icnn_bench.report.tables import FAILED, METRICS, SHORT_NAMES, method_order, natural_key

ALPHA = 0.05


@dataclass
class Leaderboard:
    ranks: pd.DataFrame  # one row per complete (target, seed) cell, one column per method
    headline: dict[str, str]  # target -> the metric it is ranked on
    dropped: int  # (target, seed) cells left out: some method has no run there
    friedman_statistic: float
    friedman_p: float
    critical_difference: float  # Nemenyi, at ALPHA
    nemenyi: pd.DataFrame | None  # pairwise p values (None: fewer than 2 cells)
    wins: pd.DataFrame  # method, opponent, wins, ties, losses, untested

    @property
    def mean_ranks(self) -> pd.Series:
        return self.ranks.mean().sort_values()

    @property
    def methods(self) -> list[str]:
        return list(self.ranks.columns)


def headline_metrics(runs: pd.DataFrame) -> dict[str, str]:
    """Per target, the first metric of METRICS its ok runs have (KL where the truth is known
    on a grid, else test NLL...)."""
    out = {}
    for target, cell in runs.groupby("target"):
        ok = cell[cell["status"] == "ok"]
        for metric, _ in METRICS:
            if metric in ok and pd.to_numeric(ok[metric], errors="coerce").notna().any():
                out[target] = metric
                break
    return out


def rank_table(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], int]:
    """Ranks (1 = best, ties averaged) of each method within each (target, seed) cell where
    every method of the sweep has a run; a failed or diverged run ranks last (a failure loses)
    and a run without the metric is treated alike. Returns the table, the headline metric of
    each target, and how many cells were left out as incomplete."""
    headline = headline_metrics(runs)
    methods = method_order(runs["method"].dropna().unique())
    finished = runs[runs["status"].isin(("ok", *FAILED))]
    rows, index, dropped = [], [], 0
    for (target, seed), cell in finished.groupby(["target", "seed"], sort=False):
        metric = headline.get(target)
        if metric is None:
            continue
        values = {}
        for row in cell.to_dict("records"):
            value = pd.to_numeric(pd.Series([row.get(metric)]), errors="coerce").iloc[0]
            bad = row["status"] != "ok" or not np.isfinite(value)
            values[row["method"]] = math.inf if bad else float(value)
        if set(values) != set(methods):
            dropped += 1
            continue
        rows.append(pd.Series(values)[methods].rank(method="average"))
        index.append((target, int(seed)))
    order = sorted(range(len(index)), key=lambda i: (natural_key(index[i][0]), index[i][1]))
    table = pd.DataFrame(
        [rows[i] for i in order],
        index=pd.MultiIndex.from_tuples([index[i] for i in order], names=["target", "seed"])
        if index
        else None,
        columns=methods,
    )
    return table, headline, dropped


def friedman(ranks: pd.DataFrame) -> tuple[float, float]:
    """Friedman's chi-square over the rank table, corrected for ties (as scipy's
    friedmanchisquare, which needs 3 methods; this also takes 2), and its p value from
    chi-square with k - 1 dof; nan for fewer than 2 methods or 2 cells."""
    n, k = ranks.shape
    if k < 2 or n < 2:
        return math.nan, math.nan
    from scipy import stats

    sums = ranks.sum(axis=0).to_numpy()
    statistic = 12.0 / (n * k * (k + 1)) * float((sums**2).sum()) - 3.0 * n * (k + 1)
    ties = sum(
        float((counts**3 - counts).sum())
        for counts in (row.value_counts().to_numpy() for _, row in ranks.iterrows())
    )
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:  # every cell a complete tie: nothing to test
        return 0.0, 1.0
    statistic /= correction
    return statistic, float(stats.chi2.sf(statistic, k - 1))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha sqrt(k (k+1) / (6 n)), with
    q_alpha the studentised range quantile over sqrt(2) (Demšar 2006)."""
    if k < 2 or n < 1:
        return math.nan
    from scipy import stats

    q = float(stats.studentized_range.ppf(1 - alpha, k, math.inf)) / math.sqrt(2)
    return q * math.sqrt(k * (k + 1) / (6 * n))


def wins_matrix(paired: pd.DataFrame, headline: dict[str, str]) -> pd.DataFrame:
    """Every ordered pair (method, opponent): over targets, on the target's headline metric,
    how often the method's paired interval lies below the opponent's (win), above (loss),
    across 0 (tie), or had too few pairs (untested)."""
    columns = ["method", "opponent", "wins", "ties", "losses", "untested"]
    if paired.empty:
        return pd.DataFrame(columns=columns)
    rows = paired[
        [headline.get(t) == m for t, m in zip(paired["target"], paired["metric"], strict=True)]
    ]
    flip = {"win": "loss", "loss": "win", "tie": "tie", "n<2": "n<2"}
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows.to_dict("records"):
        for me, them, outcome in (
            (row["method"], row["baseline"], row["verdict"]),
            (row["baseline"], row["method"], flip[row["verdict"]]),
        ):
            tally = counts.setdefault((me, them), dict.fromkeys(("win", "tie", "loss", "n<2"), 0))
            tally[outcome] += 1
    out = [
        {"method": me, "opponent": them, "wins": c["win"], "ties": c["tie"],
         "losses": c["loss"], "untested": c["n<2"]}
        for (me, them), c in counts.items()
    ]  # fmt: skip
    order = {m: i for i, m in enumerate(method_order({r["method"] for r in out}))}
    out.sort(key=lambda r: (order[r["method"]], order[r["opponent"]]))
    return pd.DataFrame(out, columns=columns)


def leaderboard(runs: pd.DataFrame, paired: pd.DataFrame) -> Leaderboard | None:
    """The leaderboard of a sweep with at least two methods and one complete cell."""
    ranks, headline, dropped = rank_table(runs)
    if ranks.shape[1] < 2 or ranks.empty:
        return None
    statistic, p = friedman(ranks)
    nemenyi = None
    if len(ranks) >= 2:
        import scikit_posthocs as sp

        nemenyi = sp.posthoc_nemenyi_friedman(ranks.to_numpy())
        nemenyi.index = nemenyi.columns = ranks.columns
    return Leaderboard(
        ranks=ranks,
        headline=headline,
        dropped=dropped,
        friedman_statistic=statistic,
        friedman_p=p,
        critical_difference=critical_difference(ranks.shape[1], len(ranks)),
        nemenyi=nemenyi,
        wins=wins_matrix(paired, headline),
    )


def leaderboard_markdown(board: Leaderboard) -> str:
    """table.md's leaderboard section: mean ranks, the Friedman test, the critical
    difference, and the wins/ties/losses matrix."""
    metrics = sorted({SHORT_NAMES.get(m, m) for m in board.headline.values()})
    n, k = board.ranks.shape
    lines = [
        "## Leaderboard: ranks over (target, seed) cells",
        "",
        f"Each method ranked within each (target, seed) cell on the target's headline metric "
        f"({', '.join(metrics)}; 1 = best, ties share the mean rank, a failed or diverged run "
        f"ranks last); {n} complete cells of {k} methods"
        + (f", {board.dropped} incomplete cells left out" if board.dropped else "")
        + ". ranks.csv holds every cell.",
        "",
        "| method | mean rank | best in cells |",
        "|---|---|---|",
    ]
    best = (board.ranks == board.ranks.min(axis=1).to_numpy()[:, None]).sum()
    for method, rank in board.mean_ranks.items():
        lines.append(f"| {method} | {rank:.2f} | {int(best[method])} of {n} |")
    lines.append("")
    if math.isnan(board.friedman_p):
        lines.append("Friedman test: needs at least 2 cells.")
    else:
        lines.append(
            f"Friedman test over {n} cells: χ² = {board.friedman_statistic:.2f} "
            f"({k - 1} dof), p = {_p(board.friedman_p)}. Nemenyi critical difference at "
            f"α = {ALPHA}: {board.critical_difference:.2f} ranks (two methods whose mean ranks "
            "differ by less are not told apart; cd_diagram.png joins them with a bar). "
            "Ranks treat cells as independent, although the seeds of one target share it."
        )
    lines += ["", _wins_table(board.wins)]
    return "\n".join(lines)


def _wins_table(wins: pd.DataFrame) -> str:
    if wins.empty:
        return ""
    methods = method_order(set(wins["method"]))
    cells = {(r["method"], r["opponent"]): r for r in wins.to_dict("records")}
    header = "| method \\ vs | " + " | ".join(methods) + " |"
    lines = [
        "Wins / ties / losses of the row's method against the column's, over targets (95% "
        "paired t-interval over seeds on the headline metric; wins.csv):",
        "",
        header,
        "|---" * (len(methods) + 1) + "|",
    ]
    for me in methods:
        row = []
        for them in methods:
            r = cells.get((me, them))
            row.append("—" if r is None else f"{r['wins']}/{r['ties']}/{r['losses']}")
        lines.append(f"| {me} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
