"""How far two report folders of the same sweep agree: per method, how many runs give the same
numbers and the largest differences; and which paired verdicts (win / tie / loss) changed.

    python scripts/compare_reports.py results/paper_1d $REPRO/results/paper_1d [--out FILE]

For checking a reproduction (another machine, another day) against a committed table. Runs
are matched on the columns that name them (target, model, method, seed, dim, where present).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

RUN_KEYS = ("target", "model", "method", "seed", "dim")
METRICS = ("test_nll", "kl", "tv", "val_nll")
PAIR_KEYS = ["target", "method", "baseline", "metric"]


def run_differences(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Per method: runs matched, runs with an identical test NLL, and each metric's largest
    absolute difference."""
    keys = [k for k in RUN_KEYS if k in first.columns and k in second.columns]
    both = first.merge(second, on=keys, suffixes=("_a", "_b"))
    rows = []
    for method, group in both.groupby("method", sort=True):
        row = {"method": method, "runs": len(group)}
        row["identical test NLL"] = int((group["test_nll_a"] == group["test_nll_b"]).sum())
        for metric in METRICS:
            if f"{metric}_a" in group:
                row[f"max abs Δ {metric}"] = (
                    (group[f"{metric}_a"] - group[f"{metric}_b"]).abs().max()
                )
        rows.append(row)
    unmatched = len(first) + len(second) - 2 * len(both)
    return pd.DataFrame(rows).assign(unmatched_in_either=unmatched)


def verdict_changes(first: pd.DataFrame, second: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    both = first.merge(second, on=PAIR_KEYS, suffixes=("_a", "_b"))
    changed = both[both["verdict_a"] != both["verdict_b"]]
    return len(both), changed[[*PAIR_KEYS, "verdict_a", "verdict_b"]]


def markdown(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * frame.shape[1]]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def compare(first: Path, second: Path) -> str:
    for folder in (first, second):
        if not (folder / "runs.csv").exists():
            raise SystemExit(f"compare_reports.py: no runs.csv in {folder} (a report folder?)")
    runs = run_differences(pd.read_csv(first / "runs.csv"), pd.read_csv(second / "runs.csv"))
    lines = [
        f"Runs of `{first}` (a) against `{second}` (b):",
        "",
        markdown(runs),
    ]
    if (first / "paired.csv").exists() and (second / "paired.csv").exists():
        pairs, changed = verdict_changes(
            pd.read_csv(first / "paired.csv"), pd.read_csv(second / "paired.csv")
        )
        lines += ["", f"Paired verdicts: {len(changed)} of {pairs} differ."]
        if len(changed):
            lines += ["", markdown(changed)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the text here")
    args = parser.parse_args(argv)
    text = compare(args.first, args.second)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
