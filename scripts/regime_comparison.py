"""The exact regime next to the paper authors' regime: which verdicts survive?

    python scripts/regime_comparison.py --exact EXACT_SWEEP --authors AUTHORS_SWEEP \\
        [--switch "learned-sampler log Z=SWEEP" ...] --out results/regime_comparison

Reads run folders only (as icnn-bench-report does). Writes table.md (per target x method:
KL, TV on our grid and TV on the authors' grid in both regimes; the paired lift - baseline
verdicts in each regime and, per switched difference, in the exact regime with that one
difference switched on), runs.csv and curves.csv.gz (every run's result and metrics rows,
to redraw from), and figures: log_z_err and validation NLL along training in the authors'
regime.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from icnn_bench import io
from icnn_bench.report import label_variants
from icnn_bench.report.collect import collect_runs, read_curves, typed_swept
from icnn_bench.report.figures import _colour
from icnn_bench.report.tables import method_order, natural_key, paired_comparisons

METRICS = {"kl": "KL", "tv": "TV", "tv_authors": "TV (authors' grid)"}
VERDICT_METRICS = ("kl", "tv_authors")


def load(folder: Path, regime: str) -> pd.DataFrame:
    runs = label_variants(collect_runs(folder))
    runs["regime"] = regime
    return runs


def load_sources(sources: list[Path], regime: str) -> pd.DataFrame:
    """Run folders, or a committed report's runs.csv (a file, or a folder holding one and no
    runs); where two sources hold the same (target, method, seed) cell, the later wins."""
    frames = []
    for source in sources:
        table = source if source.suffix == ".csv" else source / "runs.csv"
        if table.is_file() and (source.suffix == ".csv" or collect_runs(source).empty):
            runs = pd.read_csv(table)
            if "run" in runs:  # run folders named relative to the report's sweep folder
                runs["run_dir"] = [str(table.parent / name) for name in runs["run"]]
            runs = typed_swept(runs.drop(columns=["variant"], errors="ignore"))
            runs["regime"] = regime
            frames.append(runs)
        else:
            frames.append(load(source, regime))
    runs = pd.concat(frames, ignore_index=True)
    return runs.drop_duplicates(["target", "method", "seed"], keep="last")


def cell(values: pd.Series) -> str:
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return "—"
    if len(values) == 1:
        return f"{values.iloc[0]:.4f} (n=1)"
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def side_by_side(exact: pd.DataFrame, authors: pd.DataFrame) -> str:
    lines = [
        "| target | method | "
        + " | ".join(f"{name} exact | {name} authors" for name in METRICS.values())
        + " |",
        "|---|---|" + "---|---|" * len(METRICS),
    ]
    targets = sorted(set(exact["target"]) | set(authors["target"]), key=natural_key)
    for target in targets:
        methods = method_order(
            set(exact.loc[exact.target == target, "method"])
            | set(authors.loc[authors.target == target, "method"])
        )
        for method in methods:
            cells = []
            for metric in METRICS:
                for runs in (exact, authors):
                    ok = runs[(runs.target == target) & (runs.method == method)]
                    ok = ok[ok.status == "ok"]
                    cells.append(cell(ok[metric]) if metric in ok else "—")
            lines.append(f"| {target} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def effect_table(by_regime: dict[str, pd.DataFrame], metric: str, targets: list[str]) -> str:
    """Mean (± std) of `metric` per target x method under each regime or switch: which
    difference moves which method."""
    names = list(by_regime)
    lines = [
        "| target | method | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for target in targets:
        methods = method_order(
            {m for f in by_regime.values() for m in f.loc[f.target == target, "method"]}
        )
        for method in methods:
            cells = []
            for frame in by_regime.values():
                ok = frame[(frame.target == target) & (frame.method == method)]
                ok = ok[ok.status == "ok"]
                cells.append(cell(ok[metric]) if metric in ok else "—")
            lines.append(f"| {target} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fill_from_exact(
    switched: pd.DataFrame, exact: pd.DataFrame, name: str
) -> tuple[pd.DataFrame, list[str]]:
    """A switch that touches only some methods (the evaluation emission: only the lift) is
    run for those alone; the other methods' runs on the same targets and seeds are the
    exact regime's, which that switch leaves unchanged. Returns the filled frame and the
    borrowed methods (stated in the table)."""
    targets, seeds = set(switched["target"]), set(switched["seed"])
    missing = sorted(set(exact["method"]) - set(switched["method"]))
    rows = exact[
        exact["method"].isin(missing) & exact["target"].isin(targets) & exact["seed"].isin(seeds)
    ]
    if rows.empty:
        return switched, []
    return pd.concat([switched, rows.assign(regime=name)], ignore_index=True), missing


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    paired = paired_comparisons(runs)
    paired = paired[paired["metric"].isin(VERDICT_METRICS) & (paired["method"] == "lift")]
    return paired[
        ["target", "baseline", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "verdict"]
    ]


def verdict_table(by_regime: dict[str, pd.DataFrame], metric: str) -> str:
    names = list(by_regime)
    lines = [
        "| target | baseline | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    keys = sorted(
        {
            (t, b)
            for frame in by_regime.values()
            for t, b in zip(frame.target, frame.baseline, strict=True)
        },
        key=lambda k: (natural_key(k[0]), k[1]),
    )
    for target, baseline in keys:
        cells = []
        for frame in by_regime.values():
            row = frame[
                (frame.target == target) & (frame.baseline == baseline) & (frame.metric == metric)
            ]
            if row.empty:
                cells.append("—")
                continue
            r = row.iloc[0]
            cells.append(f"**{r.verdict}** {r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]")
        lines.append(f"| {target} | {baseline} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts(frame: pd.DataFrame, metric: str) -> str:
    parts = []
    for baseline in method_order(frame["baseline"].unique()):
        v = frame[(frame.baseline == baseline) & (frame.metric == metric)]["verdict"].tolist()
        parts.append(
            f"vs {baseline}: {v.count('win')} wins, {v.count('tie')} ties, {v.count('loss')} losses"
        )
    return "; ".join(parts)


def relative_to_best(curves: pd.DataFrame) -> pd.DataFrame:
    """Validation NLL minus the best method's final value on the same seed's data: the seeds'
    own sample noise cancels, so the gaps between methods show (0 = the best at the end)."""
    if curves.empty or "val_nll" not in curves:
        return curves
    curves = curves.dropna(subset=["val_nll"])
    final = curves[curves.groupby("run_dir")["step"].transform("max") == curves["step"]]
    best = final.groupby(["target", "seed"])["val_nll"].min().rename("best")
    curves = curves.join(best, on=["target", "seed"])
    return curves.assign(val_nll_excess=curves["val_nll"] - curves["best"])


def curve_panels(
    curves: pd.DataFrame, column: str, ylabel: str, path: Path, log: bool
) -> Path | None:
    if curves.empty or column not in curves or curves[column].notna().sum() == 0:
        return None
    targets = sorted(curves["target"].unique(), key=natural_key)
    cols = min(4, len(targets))
    rows = math.ceil(len(targets) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(targets) :]:
        ax.set_visible(False)
    for ax, target in zip(axes.flat, targets, strict=False):
        for i, method in enumerate(method_order(curves["method"].unique())):
            cell_curves = curves[(curves.target == target) & (curves.method == method)]
            values = cell_curves.assign(y=cell_curves[column].abs() if log else cell_curves[column])
            stats = values.groupby("step")["y"].quantile([0.25, 0.5, 0.75]).unstack().dropna()
            if stats.empty:
                continue
            colour = _colour(method, i)
            ax.plot(stats.index, stats[0.5], color=colour, lw=1.4, label=method)
            ax.fill_between(stats.index, stats[0.25], stats[0.75], color=colour, alpha=0.2)
        if log:
            ax.set_yscale("log")
        else:  # the first evaluations are orders of magnitude off: show where methods differ
            late = curves[(curves.target == target) & (curves.step >= 0.1 * curves.step.max())]
            top = late.groupby(["method", "step"])[column].median().max()
            if pd.notna(top) and top > 0:
                ax.set_ylim(min(0.0, late[column].quantile(0.05)), 1.15 * top)
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=max(1, len(labels)), frameon=False)
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--exact",
        type=Path,
        action="append",
        required=True,
        help="sweep folder or a report's runs.csv; repeatable (a later source wins a cell)",
    )
    parser.add_argument("--authors", type=Path, required=True)
    parser.add_argument("--switch", action="append", default=[], metavar="NAME=SWEEP")
    parser.add_argument("--out", type=Path, default=Path("results/regime_comparison"))
    args = parser.parse_args(argv)
    exact, authors = load_sources(args.exact, "exact"), load_sources([args.authors], "authors")
    switches = {}
    for item in args.switch:
        name, folder = item.split("=", 1)
        switches[name] = load_sources([Path(folder)], name)
    borrowed = {}
    for name, frame in switches.items():  # methods a switched sweep left out: from exact
        switches[name], borrowed[name] = fill_from_exact(frame, exact, name)
    everything = pd.concat([exact, authors, *switches.values()], ignore_index=True)
    args.out.mkdir(parents=True, exist_ok=True)
    keep = [c for c in everything.columns if c not in ("run_dir",)]
    io.write_csv(args.out / "runs.csv", everything[keep])
    curves = []
    for runs in (exact, authors, *switches.values()):
        frame = read_curves(runs)
        frame["regime"] = runs["regime"].iloc[0]
        curves.append(frame)
    curves = pd.concat(curves, ignore_index=True)
    curves.to_csv(args.out / "curves.csv.gz", index=False)
    full = {"exact": verdicts(exact), "authors": verdicts(authors)}
    switched = {
        "exact": full["exact"],
        **{n: verdicts(r) for n, r in switches.items()},
        "authors (all)": full["authors"],
    }
    authors_curves = curves[curves.regime == "authors"]
    figures = [
        curve_panels(
            authors_curves,
            "log_z_err",
            "|log Ẑ − log Z| (training estimator)",
            args.out / "log_z_err.png",
            log=True,
        ),
        curve_panels(
            relative_to_best(authors_curves),
            "val_nll_excess",
            "val. NLL − best final (same seed)",
            args.out / "val_nll_authors.png",
            log=False,
        ),
    ]
    parts = [
        "# The exact regime and the paper authors' regime, side by side",
        "",
        "Same targets, methods, seeds and budget (paper_1d: width 128, 3 layers, 3000 steps);",
        "only training differs. Metrics are exact in both (grid KL and TV on our 8000-point",
        "grid, TV on the authors' 8000-point window grid). Mean ± std over seeds.",
        "",
        side_by_side(exact, authors),
    ]
    for metric in VERDICT_METRICS:
        parts += [
            "",
            f"## Paired lift − baseline on {METRICS[metric]}, by regime",
            "",
            "Mean difference [95% paired t-interval over seeds]; negative = lift better; win / "
            "loss: the interval below / above 0.",
            "",
            verdict_table(full, metric),
            "",
            *(f"- {name}: {counts(frame, metric)}" for name, frame in full.items()),
        ]
    if switches:
        switched_targets = sorted(
            {t for f in switches.values() for t in f["target"]}, key=natural_key
        )
        runs_by = {"exact": exact, **switches, "authors (all)": authors}
        parts += [
            "",
            "## What each difference does to each method (KL, mean ± std over seeds)",
            "",
            "The exact regime, the exact regime with one of the authors' differences switched",
            "on, and the authors' regime with all of them; the switched sweeps may have fewer",
            "seeds (n in summary below).",
            "",
            effect_table(runs_by, "kl", switched_targets),
            "",
            *(
                f"- {name}: {len(f[f.status == 'ok'])} ok runs, seeds "
                f"{sorted(int(x) for x in f['seed'].dropna().unique())}"
                + (
                    f"; {', '.join(borrowed[name])} from the exact regime (this switch does "
                    "not touch them, so they were not run again)"
                    if borrowed.get(name)
                    else ""
                )
                for name, f in runs_by.items()
            ),
        ]
        for metric in VERDICT_METRICS:
            parts += [
                "",
                f"## One difference at a time ({METRICS[metric]})",
                "",
                "The exact regime with one of the authors' differences switched on, next to "
                "both regimes.",
                "",
                verdict_table(switched, metric),
                "",
                *(f"- {name}: {counts(frame, metric)}" for name, frame in switched.items()),
            ]
    parts += ["", *(f"![{p.stem}]({p.name})" for p in figures if p is not None)]
    io.write_text(args.out / "table.md", "\n".join(parts) + "\n")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
