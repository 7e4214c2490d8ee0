"""Comparison tables: mean ± std over seeds per target x method, best per row marked."""

from __future__ import annotations

import math
import re

import pandas as pd

# (column in result.json, heading); lower is better for all of them.
METRICS: list[tuple[str, str]] = [
    ("kl", "KL(target ‖ model) on the evaluation grid, nats"),
    ("tv", "Total variation on the evaluation grid"),
    ("hellinger", "Hellinger distance on the evaluation grid"),
    ("test_nll", "Test NLL, nats"),
    ("kl_mc", "Test NLL − entropy, nats (sample estimate of KL; ±1/√n_test noise)"),
]
FAILED = ("failed", "diverged")
METHOD_ORDER = ["pgd", "softplus", "lift", "maf_reference"]


def method_order(methods) -> list[str]:
    present = [m for m in methods if isinstance(m, str)]
    known = [m for m in METHOD_ORDER if m in present]
    return known + sorted(set(present) - set(known))


def natural_key(label: str) -> list:
    """Sort "d=16" after "d=2": digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(label))]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, method): run counts and mean/std/n of each metric over ok runs."""
    rows = []
    for (target, method), cell in runs.groupby(["target", "method"], sort=True):
        ok = cell[cell["status"] == "ok"]
        row = {
            "target": target,
            "method": method,
            "runs": len(cell),
            "ok": len(ok),
            "failed": int(cell["status"].isin(FAILED).sum()),
            "running": int((cell["status"] == "running").sum()),
        }
        estimators = ok["log_z_estimator"] if "log_z_estimator" in ok else pd.Series(dtype=str)
        row["importance_runs"] = int((estimators == "importance").sum())
        se = pd.to_numeric(ok.get("log_z_se", pd.Series(dtype=float)), errors="coerce").dropna()
        row["log_z_se_mean"] = float(se.mean()) if len(se) else math.nan
        samples = pd.to_numeric(ok.get("log_z_samples", pd.Series(dtype=float)), errors="coerce")
        row["log_z_samples"] = int(samples.max()) if samples.notna().any() else 0
        for metric, _ in METRICS:
            values = pd.to_numeric(ok[metric], errors="coerce").dropna() if metric in ok else []
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{metric}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(summary: pd.DataFrame, metric: str) -> str | None:
    """target x method table of `metric`; the lowest mean per row in bold. None if no values."""
    if summary.empty or summary[f"{metric}_n"].sum() == 0:
        return None
    methods = method_order(summary["method"].unique())
    lines = ["| target | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    groups = sorted(summary.groupby("target", sort=False), key=lambda g: natural_key(g[0]))
    for target, cells in groups:
        if cells[f"{metric}_n"].sum() == 0 and cells["failed"].sum() + cells["running"].sum() == 0:
            continue  # this metric does not exist for this target (e.g. grid KL in d > 2)
        by_method = {row.method: row for row in cells.itertuples()}
        means = {
            m: getattr(by_method[m], f"{metric}_mean")
            for m in methods
            if m in by_method and not math.isnan(getattr(by_method[m], f"{metric}_mean"))
        }
        best = min(means, key=means.get) if len(means) > 1 else None
        entries = []
        for m in methods:
            row = by_method.get(m)
            entries.append("—" if row is None else _cell(row, metric, bold=(m == best)))
        lines.append(f"| {target} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def _cell(row, metric: str, bold: bool) -> str:
    mean, std, n = (getattr(row, f"{metric}_{k}") for k in ("mean", "std", "n"))
    if n == 0:
        text = "—"
    else:
        text = _fmt(mean) + (f" ± {_fmt(std)}" if n > 1 else "")
        text = f"**{text}**" if bold else text
        text += f" (n={n})"
        if metric in ("test_nll", "kl_mc") and getattr(row, "importance_runs", 0):
            text += f" [IS: se {_fmt(row.log_z_se_mean)}, M={row.log_z_samples}]"
    notes = []
    if row.failed:
        notes.append(f"{row.failed} failed")
    if row.running:
        notes.append(f"{row.running} running")
    return text + (f" [{', '.join(notes)}]" if notes else "")


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e4):
        return f"{value:.2e}"
    return f"{value:.4f}"


def comparison_markdown(summary: pd.DataFrame, title: str) -> str:
    """All metric tables in one markdown document."""
    parts = [
        f"# {title}",
        "",
        "Mean ± std over seeds (n = successful runs); **bold** = lowest mean in the row;",
        "failed or diverged runs are counted in brackets and left out of the mean.",
    ]
    if "importance_runs" in summary and summary["importance_runs"].sum() > 0:
        parts += [
            "",
            "Cells marked [IS: se …, M=…] use log Z by importance sampling with M proposal",
            "draws: that NLL is an *estimate*, biased low (optimistic, by Jensen's inequality);",
            "se is the mean per-run Monte Carlo standard error of log Z.",
        ]
    for metric, heading in METRICS:
        table = markdown_table(summary, metric)
        if table is not None:
            parts += ["", f"## {heading}", "", table]
    return "\n".join(parts) + "\n"
