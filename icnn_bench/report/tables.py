"""Comparison tables over seeds per target x method (mean ± std, t-interval, best marked), paired
differences between methods (the method under test − each other), and their markdown and
LaTeX renderings."""

from __future__ import annotations

import math
import re

import pandas as pd

from icnn_bench.report.collect import swept_columns, swept_of
from icnn_bench.report.stats import LEVEL, paired_difference, t_interval, verdict

# (column in result.json, heading); lower is better for all of them.
METRICS: list[tuple[str, str]] = [
    ("l2_uvp", "L2-UVP of the learned OT map, % of Var(Q) (Korotin et al. 2021)"),
    ("cos_gap", "1 − cosine similarity of T − id and T* − id in L2(P)"),
    ("w2_rel_err", "Relative error of W2² estimated by the learned map"),
    ("kl", "KL(target ‖ model) on the evaluation grid, nats"),
    ("tv", "Total variation on the evaluation grid"),
    ("tv_authors", "Total variation on the paper authors' grid (8000 points over their window)"),
    ("hellinger", "Hellinger distance on the evaluation grid"),
    ("test_nll", "Test NLL, nats"),
    ("kl_mc", "Test NLL − entropy, nats (sample estimate of KL; ±1/√n_test noise)"),
]
SHORT_NAMES = {
    "l2_uvp": "L2-UVP %",
    "cos_gap": "1 − cos",
    "w2_rel_err": "W2² rel. error",
    "kl": "KL",
    "tv": "TV",
    "tv_authors": "TV (authors' grid)",
    "hellinger": "Hellinger",
    "test_nll": "test NLL",
    "kl_mc": "NLL − entropy",
}
FAILED = ("failed", "diverged")
LIFT = "lift"  # the method under test unless a report names another
PAIRED_COLUMNS = [
    "target",
    "method",
    "baseline",
    "metric",
    "n_pairs",
    "method_mean",
    "baseline_mean",
    "mean_diff",
    "ci_low",
    "ci_high",
    "t_p",
    "wilcoxon_p",
    "verdict",
]


def method_order(methods) -> list[str]:
    """Column order, derived from the names: the baselines, the lift, its variants (lift_*),
    then reference models (whose column is a model's name), each group alphabetical; the
    package's own methods before a user's."""
    present = sorted({m for m in methods if isinstance(m, str)}, key=natural_key)
    return sorted(present, key=_method_rank)


def _method_rank(name: str) -> tuple[int, int]:
    from icnn_bench import registry

    base = name.split(" [")[0]  # "lift [trainer.lr=0.01]" ranks as lift
    if base in registry.options("model"):
        group = 3  # a reference model (no constraint method): its column is its own name
    elif base == LIFT:
        group = 1
    elif base.startswith(LIFT + "_"):
        group = 2
    else:
        group = 0
    ours = registry.packaged("method", base) or registry.packaged("model", base)
    return group, 0 if ours else 1


def natural_key(label: str) -> list:
    """Sort "d=16" after "d=2": digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(label))]


# ---------------------------------------------------------------- aggregation


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (target, method): run counts and mean/std/t-interval/n of each metric over
    ok runs."""
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
            "interrupted": int((cell["status"] == "interrupted").sum()),  # resumable
            "unreadable": int((cell["status"] == "unreadable").sum()),
        }
        estimators = ok["log_z_estimator"] if "log_z_estimator" in ok else pd.Series(dtype=str)
        row["importance_runs"] = int((estimators == "importance").sum())
        se = pd.to_numeric(ok.get("log_z_se", pd.Series(dtype=float)), errors="coerce").dropna()
        row["log_z_se_mean"] = float(se.mean()) if len(se) else math.nan
        for key in ("n_params", "train_s", "steps_per_s"):  # what each method costs
            values = pd.to_numeric(ok.get(key, pd.Series(dtype=float)), errors="coerce").dropna()
            row[f"{key}_mean"] = float(values.mean()) if len(values) else math.nan
        samples = pd.to_numeric(ok.get("log_z_samples", pd.Series(dtype=float)), errors="coerce")
        row["log_z_samples"] = int(samples.max()) if samples.notna().any() else 0
        for metric, _ in METRICS:
            values = pd.to_numeric(ok[metric], errors="coerce").dropna() if metric in ok else []
            row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = t_interval(values)
            row[f"{metric}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def under_test_labels(runs: pd.DataFrame, under_test: str | None = None) -> list[str]:
    """The columns of the method under test: `under_test` (a method's name, or one column's
    label), else the lift where the sweep has it; [] (every pair) without either."""
    names = _method_names(runs)
    if under_test is None:
        if LIFT not in names.values():
            return []
        under_test = LIFT
    labels = [label for label, name in names.items() if under_test in (name, label)]
    if not labels:
        known = ", ".join(method_order(set(names.values())))
        raise ValueError(f"no method {under_test!r} in this sweep to test; it has: {known}")
    return sorted(labels, key=natural_key)


def paired_comparisons(runs: pd.DataFrame, under_test: str | None = None) -> pd.DataFrame:
    """One row per target x pair of methods x metric: method − baseline over the seeds where
    both runs are ok (same seed = same data draw). Every pair whose swept settings agree is
    there once, the method under test (`under_test_labels`) first where it is in the pair,
    else the later column of the table minus the earlier."""
    tested = under_test_labels(runs, under_test)
    rows = []
    for target in sorted(runs["target"].dropna().unique(), key=natural_key):
        cell = runs[runs["target"] == target]
        metrics = [m for m, _ in METRICS if _has_values(cell, m)]
        labels = method_order(_method_names(cell))
        for i, earlier in enumerate(labels):
            for later in labels[i + 1 :]:
                if not _comparable(cell, earlier, later):
                    continue
                first, second = (earlier, later) if earlier in tested else (later, earlier)
                if earlier in tested and later in tested:
                    first, second = later, earlier
                rows += [_paired_row(cell, target, first, second, m) for m in metrics]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def shown_pairs(paired: pd.DataFrame, runs: pd.DataFrame, under_test: str | None = None):
    """The rows table.md shows: the method under test against each other, or every pair."""
    tested = under_test_labels(runs, under_test)
    return paired[paired["method"].isin(tested)] if tested else paired


def _has_values(cell: pd.DataFrame, metric: str) -> bool:
    if metric not in cell:
        return False
    return bool(
        pd.to_numeric(cell.loc[cell["status"] == "ok", metric], errors="coerce").notna().any()
    )


def _method_names(cell: pd.DataFrame) -> dict[str, str]:
    """Column label -> method name ("lift [trainer.lr=0.1]" -> "lift")."""
    names = cell["method_name"] if "method_name" in cell else cell["method"]
    return {
        label: name
        for label, name in zip(cell["method"], names, strict=True)
        if isinstance(label, str)
    }


def _comparable(cell: pd.DataFrame, one: str, other: str) -> bool:
    """Whether two columns' swept settings agree where both have them: with model.depth
    swept, lift at depth 2 is compared with pgd at depth 2 only."""
    mine, theirs = _settings(cell, one), _settings(cell, other)
    return all(mine[k] == v for k, v in theirs.items() if k in mine)


def _settings(cell: pd.DataFrame, label: str) -> dict[str, object]:
    """The swept settings of a column, without those it does not have (None)."""
    rows = cell[cell["method"] == label].to_dict("records")
    return swept_of(rows[0], swept_columns(cell)) if rows else {}


def _paired_row(cell: pd.DataFrame, target: str, method: str, baseline: str, metric: str) -> dict:
    mine, theirs = _values_by_seed(cell, method, metric), _values_by_seed(cell, baseline, metric)
    seeds = mine.index.intersection(theirs.index).sort_values()
    mine, theirs = mine[seeds], theirs[seeds]
    result = paired_difference((mine - theirs).to_numpy())
    return {
        "target": target,
        "method": method,
        "baseline": baseline,
        "metric": metric,
        "method_mean": float(mine.mean()) if len(seeds) else math.nan,
        "baseline_mean": float(theirs.mean()) if len(seeds) else math.nan,
        **result,
        "verdict": verdict(result["n_pairs"], result["ci_low"], result["ci_high"]),
    }


def _values_by_seed(cell: pd.DataFrame, label: str, metric: str) -> pd.Series:
    ok = cell[(cell["method"] == label) & (cell["status"] == "ok")]
    if metric not in ok:
        return pd.Series(dtype=float)
    frame = pd.DataFrame(
        {
            "seed": pd.to_numeric(ok["seed"], errors="coerce"),
            "value": pd.to_numeric(ok[metric], errors="coerce"),
        }
    ).dropna()
    return frame.groupby("seed")["value"].mean()  # a seed run twice counts once


def headline_blocks(paired: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(method, metric, rows) per compared method and target family, a family being the
    targets whose headline metric (the first of METRICS they have) is `metric`."""
    if paired.empty:
        return []
    order = [m for m, _ in METRICS]
    headline = {t: min(g["metric"], key=order.index) for t, g in paired.groupby("target")}
    is_headline = [
        headline[t] == m for t, m in zip(paired["target"], paired["metric"], strict=True)
    ]
    rows = paired[is_headline]
    blocks = []
    for method in method_order(rows["method"].unique()):
        for metric in order:
            block = rows[(rows["method"] == method) & (rows["metric"] == metric)]
            if len(block):
                blocks.append((method, metric, block))
    return blocks


def wins_lines(paired: pd.DataFrame) -> list[str]:
    """'lift vs pgd: 3 wins, 5 ties, 0 losses (95% paired t-interval over seeds, KL)', one per
    method x baseline x target family of `paired`."""
    lines = []
    for method, metric, block in headline_blocks(paired):
        for baseline in method_order(block["baseline"].unique()):
            verdicts = block.loc[block["baseline"] == baseline, "verdict"].tolist()
            lines.append(_wins_line(method, baseline, metric, verdicts))
    return lines


def _wins_line(method: str, baseline: str, metric: str, verdicts: list[str]) -> str:
    counts = [_count(verdicts.count(v), v) for v in ("win", "tie", "loss")]
    untested = verdicts.count("n<2")
    if untested:
        counts.append(f"{untested} with n<2")
    basis = f"{LEVEL:.0%} paired t-interval over seeds, {SHORT_NAMES.get(metric, metric)}"
    return f"{method} vs {baseline}: {', '.join(counts)} ({basis})"


def _count(n: int, word: str) -> str:
    plural = word + ("es" if word.endswith("s") else "s")
    return f"{n} {word if n == 1 else plural}"


# ---------------------------------------------------------------- markdown


def _metric_rows(summary: pd.DataFrame, metric: str):
    """Methods in column order and, per target having `metric`, its cells and best method."""
    methods = method_order(summary["method"].unique())
    rows = []
    groups = sorted(summary.groupby("target", sort=False), key=lambda g: natural_key(g[0]))
    for target, cells in groups:
        unfinished = sum(cells[k].sum() for k in ("failed", "running", "interrupted", "unreadable"))
        if cells[f"{metric}_n"].sum() == 0 and unfinished == 0:
            continue  # this metric does not exist for this target (e.g. grid KL in d > 2)
        by_method = {row.method: row for row in cells.itertuples()}
        means = {
            m: getattr(by_method[m], f"{metric}_mean")
            for m in methods
            if m in by_method and not math.isnan(getattr(by_method[m], f"{metric}_mean"))
        }
        best = min(means, key=means.get) if len(means) > 1 else None
        rows.append((target, by_method, best))
    return methods, rows


def _has_metric(summary: pd.DataFrame, metric: str) -> bool:
    return not summary.empty and summary[f"{metric}_n"].sum() > 0


def markdown_table(summary: pd.DataFrame, metric: str) -> str | None:
    """target x method table of `metric`; the lowest mean per row in bold. None if no values.
    Wider than WIDTH characters, it is split into tables of fewer methods each."""
    if not _has_metric(summary, metric):
        return None
    methods, rows = _metric_rows(summary, metric)
    common = common_n(summary, metric)
    columns = [
        (
            method,
            [
                "—"
                if method not in by_method
                else _cell(by_method[method], metric, method == best, common)
                for _, by_method, best in rows
            ],
        )
        for method in methods
    ]
    table = fitted_table("target", [target for target, _, _ in rows], columns)
    if common == 2:  # said once, not in every cell
        return f"Every cell without its own n: 2 seeds (n<3).\n\n{table}"
    return table


WIDTH = 100  # characters a markdown table's lines may take


def short_label(label: str) -> str:
    """Short row labels and panel titles: drop the "target.params." and "data." prefixes of
    swept keys (csv files keep the full names)."""
    return str(label).replace("target.params.", "").replace("data.", "")


def fitted_table(
    first: str, labels: list[str], columns: list[tuple[str, list[str]]], width: int = WIDTH
) -> str:
    """A markdown table, split column-wise into several (each repeating the first column)
    where one would be wider than `width`."""
    labels = [short_label(label) for label in labels]
    label_width = max(len(first), *(len(label) for label in labels)) + 4
    chunks: list[list[tuple[str, list[str]]]] = [[]]
    used = label_width
    for header, cells in columns:
        wide = max(len(header), *(len(c) for c in cells)) + 3
        if chunks[-1] and used + wide > width:
            chunks.append([])
            used = label_width
        chunks[-1].append((header, cells))
        used += wide
    tables = []
    for chunk in chunks:
        lines = ["| " + first + " | " + " | ".join(h for h, _ in chunk) + " |"]
        lines.append("|---" * (len(chunk) + 1) + "|")
        for i, label in enumerate(labels):
            lines.append(f"| {label} | " + " | ".join(cells[i] for _, cells in chunk) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def common_n(summary: pd.DataFrame, metric: str) -> int:
    """The number of seeds most cells of a table have (cells with another say theirs)."""
    counts = summary[f"{metric}_n"]
    counts = counts[counts > 0]
    return int(counts.mode().iloc[0]) if len(counts) else 0


def _cell(row, metric: str, bold: bool, common: int = -1) -> str:
    mean, std, n = (getattr(row, f"{metric}_{k}") for k in ("mean", "std", "n"))
    if n == 0:
        text = "—"
    else:
        text = _fmt(mean) + (f" ± {_fmt(std)}" if n > 1 else "")
        text = f"**{text}**" if bold else text
        if n != common:
            text += " (n=2; n<3)" if n == 2 else f" (n={n})"
        if metric in ("test_nll", "kl_mc") and getattr(row, "importance_runs", 0):
            text += f" [IS: se {_fmt(row.log_z_se_mean)}, M={row.log_z_samples}]"
    notes = _failure_notes(row)
    return text + (f" [{', '.join(notes)}]" if notes else "")


def _failure_notes(row) -> list[str]:
    notes = []
    if row.failed:
        notes.append(f"{row.failed} failed")
    if row.running:
        notes.append(f"{row.running} running")
    if getattr(row, "interrupted", 0):
        notes.append(f"{row.interrupted} interrupted")
    if getattr(row, "unreadable", 0):
        notes.append(f"{row.unreadable} unreadable")
    return notes


SIGNIFICANT = 4  # digits of every number in a table: 0.0006625, 0.01500, 1.576, 27.93


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if magnitude < 1e-6 or magnitude >= 1e6:
        return f"{value:.{SIGNIFICANT - 1}e}"
    decimals = max(0, SIGNIFICANT - 1 - math.floor(math.log10(magnitude)))
    return f"{value:.{decimals}f}"


def _signed(value: float) -> str:
    """_fmt with a typographic minus, so a difference's sign stands out."""
    text = _fmt(value)
    return "−" + text[1:] if text.startswith("-") else text


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


PAIRED_PREAMBLE = "\n".join(
    [
        "Method minus baseline on the same seeds (same data draw), over the seeds where both runs",
        "are ok; negative = method better (every metric is lower-is-better). Cell: mean difference",
        f"[{LEVEL:.0%} paired t-interval over seeds]; n<2: too few pairs for a test. Each",
        "target shows its headline metric (the first one it has). paired.csv holds every",
        "metric, the two-sided paired t-test p (also in table.tex) and the exact Wilcoxon",
        "signed-rank p (zeros dropped, midranks for ties), at least 2/2^n (0.0625 at n = 5).",
        "Win / loss: the interval lies entirely below / above 0; otherwise a tie.",
    ]
)


def paired_markdown(paired: pd.DataFrame) -> str | None:
    """table.md's paired section: per compared method and target family, target x baseline
    differences on the headline metric, then the wins/ties/losses lines. None without pairs."""
    blocks = headline_blocks(paired)
    if not blocks:
        return None
    headings = dict(METRICS)
    tested = method_order(paired["method"].unique())
    what = f"{tested[0]} − each other method" if len(tested) == 1 else "every pair of methods"
    parts = [f"## Paired comparison: {what}, over seeds", "", PAIRED_PREAMBLE]
    for method, metric, block in blocks:
        baselines = method_order(block["baseline"].unique())
        title = f"{method} − baseline: {headings[metric]}"
        pairs = int(block["n_pairs"].mode().iloc[0])
        parts += [
            "",
            f"### {title} ({pairs} pairs per cell unless marked)",
            "",
            _paired_markdown_table(block, baselines, pairs),
        ]
        lines = wins_lines(block)
        parts += ["", *(f"- {line}" for line in lines)]
    return "\n".join(parts)


def _paired_markdown_table(block: pd.DataFrame, baselines: list[str], common: int) -> str:
    targets = list(dict.fromkeys(block["target"]))
    by_cell = {(row.target, row.baseline): row for row in block.itertuples()}
    columns = [
        (
            f"vs {b}",
            [
                _paired_markdown_cell(by_cell[(t, b)], common) if (t, b) in by_cell else "—"
                for t in targets
            ],
        )
        for b in baselines
    ]
    return fitted_table("target", targets, columns)


def _paired_markdown_cell(row, common: int) -> str:
    """`mean [low, high]`, with n where it is not the block's; p values are in paired.csv."""
    if row.n_pairs < 2:
        return _paired_cell(row)
    interval = f"{_signed(row.mean_diff)} [{_signed(row.ci_low)}, {_signed(row.ci_high)}]"
    return interval if row.n_pairs == common else f"{interval} (n={row.n_pairs})"


def _paired_cell(row, number=None, too_few: str = "n<2", p_value=None) -> str:
    """`mean [low, high], p=… (n=…)`; the LaTeX table passes its own number and p formats."""
    number = number or _signed
    p_value = p_value or _p
    if row.n_pairs == 0:
        return f"{too_few} (n=0)"
    if row.n_pairs < 2:
        return f"{number(row.mean_diff)}, {too_few} (n=1)"
    interval = f"[{number(row.ci_low)}, {number(row.ci_high)}]"
    return f"{number(row.mean_diff)} {interval}, {p_value(row.t_p)} (n={row.n_pairs})"


def comparison_markdown(
    summary: pd.DataFrame,
    title: str,
    paired: pd.DataFrame | None = None,
    notes: list[str] | None = None,
    sections: list[str] | None = None,
) -> str:
    """All metric tables in one markdown document, then the paired section, then any
    `sections` (the leaderboard)."""
    parts = [
        f"# {title}",
        "",
        "Mean ± std over seeds (the successful runs; a cell with fewer seeds than the table's",
        "others says how many); **bold** = lowest mean in the row; failed or diverged runs are",
        f"counted in brackets and left out of the mean. {LEVEL:.0%} t-intervals over seeds are in",
        "summary.csv and, for the method under test against each other, below. Cells of 2",
        "seeds are marked n<3: an interval with 1 degree of freedom says little (and is never",
        "clipped).",
    ]
    for note in notes or []:
        parts += ["", f"**Note:** {note}."]
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
    cost = cost_markdown(summary)
    if cost is not None:
        parts += ["", cost]
    section = paired_markdown(paired) if paired is not None else None
    if section is not None:
        parts += ["", section]
    for extra in sections or []:
        parts += ["", extra]
    return "\n".join(parts) + "\n"


def cost_markdown(summary: pd.DataFrame) -> str | None:
    """Per method, over the table's cells: trainable parameters, training time, steps/s."""
    if summary.empty or "train_s_mean" not in summary or summary["train_s_mean"].isna().all():
        return None
    lines = [
        "## Cost per method (mean over the cells above)",
        "",
        "| method | trainable params | train time, s | steps/s |",
        "|---|---|---|---|",
    ]
    for method in method_order(summary["method"].unique()):
        rows = summary[summary["method"] == method]
        params = rows["n_params_mean"].mean()
        cells = [
            "—" if math.isnan(params) else f"{params:,.0f}",
            _fmt(rows["train_s_mean"].mean()),
            _fmt(rows["steps_per_s_mean"].mean()),
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- LaTeX

_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "‖": r"$\|$",
    "−": "$-$",
    "±": r"$\pm$",
    "√": r"$\surd$",
    "…": r"\ldots{}",
    "—": "---",
}


def latex_escape(text: str) -> str:
    """Plain text -> LaTeX text: specials escaped, the few non-ASCII symbols we use in math."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _tex_num(value: float) -> str:
    text = _fmt(value)
    if "e" in text and text != "nan":
        mantissa, exponent = text.split("e")
        return f"${mantissa}\\times10^{{{int(exponent)}}}$"
    return "$-$" + text[1:] if text.startswith("-") else text


def _tex_label(*parts: str) -> str:
    return "tab:" + "-".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-") for p in parts)


def _tex_table(caption: str, label: str, header: list[str], body: list[list[str]]) -> str:
    """A booktabs table float; header and body cells are LaTeX already."""
    return "\n".join(
        [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\label{{{label}}}",
            r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
            r"\toprule",
            " & ".join(header) + r" \\",
            r"\midrule",
            *(" & ".join(cells) + r" \\" for cells in body),
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def latex_table(summary: pd.DataFrame, metric: str, heading: str) -> str | None:
    """markdown_table as a booktabs table: mean $\\pm$ std, best mean per row in bold."""
    if not _has_metric(summary, metric):
        return None
    methods, rows = _metric_rows(summary, metric)
    body = [
        [latex_escape(target)]
        + [
            "---" if m not in by_method else _tex_cell(by_method[m], metric, m == best)
            for m in methods
        ]
        for target, by_method, best in rows
    ]
    header = ["target", *(latex_escape(m) for m in methods)]
    caption = latex_escape(f"{heading}: mean ± std over seeds; bold = lowest mean in the row.")
    return _tex_table(caption, _tex_label(metric), header, body)


def _tex_cell(row, metric: str, bold: bool) -> str:
    mean, std, n = (getattr(row, f"{metric}_{k}") for k in ("mean", "std", "n"))
    if n == 0:
        text = "---"
    else:
        text = _tex_num(mean) + (f" $\\pm$ {_tex_num(std)}" if n > 1 else "")
        text = f"\\textbf{{{text}}}" if bold else text
    notes = [f"n={n}"] if n else []
    if n and metric in ("test_nll", "kl_mc") and getattr(row, "importance_runs", 0):
        notes.append("IS")
    notes += _failure_notes(row)
    return text + (f" {{\\scriptsize({'; '.join(notes)})}}" if notes else "")


def latex_paired_table(block: pd.DataFrame, method: str, metric: str) -> str:
    """The paired markdown table of one method and target family as a booktabs table."""
    baselines = method_order(block["baseline"].unique())
    body = []
    for target, rows in block.groupby("target", sort=False):
        by_baseline = {row.baseline: row for row in rows.itertuples()}
        cells = [_tex_paired_cell(by_baseline[b]) if b in by_baseline else "---" for b in baselines]
        body.append([latex_escape(target), *cells])
    header = ["target", *(latex_escape(f"vs {b}") for b in baselines)]
    caption = latex_escape(
        f"{method} − baseline, {dict(METRICS)[metric]}: mean difference over the seeds where both "
        f"runs are ok [{LEVEL:.0%} paired t-interval], two-sided paired t-test p (n pairs); "
        f"negative = {method} better."
    )
    return _tex_table(caption, _tex_label("paired", method, metric), header, body)


def _tex_paired_cell(row) -> str:
    return _paired_cell(row, _tex_num, "n$<$2", lambda p: f"${_p(p)}$")


def comparison_latex(summary: pd.DataFrame, paired: pd.DataFrame, title: str) -> str:
    """table.tex: every metric table, then the paired tables, each a float to \\input."""
    parts = [f"% {title}", r"% generated by icnn-bench-report; needs \usepackage{booktabs}"]
    for metric, heading in METRICS:
        table = latex_table(summary, metric, heading)
        if table is not None:
            parts += ["", table]
    for method, metric, block in headline_blocks(paired):
        parts += ["", latex_paired_table(block, method, metric)]
        parts += [f"% {line}" for line in wins_lines(block)]
    return "\n".join(parts) + "\n"
