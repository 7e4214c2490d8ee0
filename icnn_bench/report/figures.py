"""Figures from run-folder files: curves with a band over seeds, and 1-D densities."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from icnn_bench import io
from icnn_bench.report.tables import method_order, natural_key

PALETTE = [
    f"tab:{c}"
    for c in ["blue", "orange", "green", "red", "purple", "brown", "pink", "olive", "cyan"]
]


def method_colours() -> dict[str, str]:
    """One hue per method, the same in every figure of an installation: by the position of
    the method in the column order of every method the config folders know."""
    from icnn_bench import registry

    known = method_order([*registry.options("method"), *registry.options("model")])
    known = [m for m in known if m in registry.options("method")]  # model-only names last
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(known)}


def short_label(label: str) -> str:
    """Short panel titles: drop the "target.params." and "data." prefixes of swept keys."""
    return str(label).replace("target.params.", "").replace("data.", "")


def _colour(method: str, index: int) -> str:
    colours = method_colours()
    base = str(method).split(" [")[0]
    return colours.get(base, f"C{(len(colours) + index) % 10}")


def _panels(n: int, width: float = 3.6, height: float = 2.8):
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def curve_figure(
    curves: pd.DataFrame, metric: str, ylabel: str, path: Path, log_y: bool = False
) -> Path | None:
    """One panel per target, one colour per method: mean over seeds with a min-max band."""
    if curves.empty or metric not in curves:
        return None
    targets = sorted(curves["target"].dropna().unique(), key=natural_key)
    methods = method_order(curves["method"].unique())
    fig, axes = _panels(len(targets))
    for ax, target in zip(axes, targets, strict=False):
        shown = []
        for i, method in enumerate(methods):
            cell = curves[(curves["target"] == target) & (curves["method"] == method)]
            stats = cell.groupby("step")[metric].agg(["mean", "min", "max", "count"]).dropna()
            if stats.empty:
                continue
            colour = _colour(method, i)
            label = f"{method} ({cell['seed'].nunique()} seeds)"
            ax.plot(stats.index, stats["mean"], color=colour, label=label, lw=1.5)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.2)
            shown.append(stats)
        if shown and not log_y:
            _robust_ylim(ax, pd.concat(shown))
        if log_y:
            ax.set_yscale("log")
        ax.set_title(short_label(target), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        [lab.split(" (")[0] for lab in labels],
        loc="upper center",
        ncol=len(labels),
        bbox_to_anchor=(0.5, 1.04),
        frameon=False,
    )
    fig.suptitle("shaded: min-max over seeds; line: mean", y=-0.01, fontsize=8)
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _robust_ylim(ax, stats: pd.DataFrame) -> None:
    """Keep the first evaluations' huge values from flattening the rest of the curve."""
    low = float(stats["min"].min())
    late = stats[stats.index >= stats.index.max() * 0.1]
    high = float(late["max"].quantile(0.95)) if not late.empty else float(stats["max"].max())
    if math.isfinite(low) and math.isfinite(high) and high > low:
        pad = 0.08 * (high - low)
        ax.set_ylim(low - pad, high + pad)


def density_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Per 1-D target: the true density and each method's fit (lowest finished seed)."""
    fits = []
    for run in runs[runs["status"] == "ok"].itertuples():
        file = Path(run.run_dir) / "density.csv"
        if file.exists() and getattr(run, "dim", 1) == 1:
            fits.append((run.target, run.method, run.seed, file))
    if not fits:
        return None
    targets = sorted({t for t, *_ in fits}, key=natural_key)
    methods = method_order({m for _, m, *_ in fits})
    fig, axes = _panels(len(targets))
    for ax, target in zip(axes, targets, strict=False):
        files = {(m, s): f for t, m, s, f in fits if t == target}
        seed_sets = [{s for m2, s in files if m2 == m} for m in methods]
        common = set.intersection(*[ss for ss in seed_sets if ss])
        seed = min(common) if common else None  # one seed shared by all methods, if any
        truth_drawn = False
        for i, method in enumerate(methods):
            mine = sorted(s for m, s in files if m == method)
            if not mine:
                continue
            table = pd.read_csv(files[(method, seed if seed in mine else mine[0])])
            if not truth_drawn and "target" in table:
                ax.fill_between(table["x"], table["target"], color="0.85", label="target")
                _crop_x(ax, table)
                truth_drawn = True
            ax.plot(table["x"], table["model"], color=_colour(method, i), lw=1.3, label=method)
        title = short_label(target)
        ax.set_title(title if seed is None else f"{title} (seed {seed})", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=len(labels),
        bbox_to_anchor=(0.5, 1.04),
        frameon=False,
    )
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def heatmap_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """2-D targets: one row per target; the training data's histogram, then each method's
    fitted density (lowest seed all methods share); each panel scaled to its own maximum."""
    fits: dict[tuple[str, str], list[tuple[int, Path]]] = {}
    for run in runs[runs["status"] == "ok"].itertuples():
        file = Path(run.run_dir) / "density.csv"
        if file.exists() and getattr(run, "dim", None) == 2:
            fits.setdefault((run.target, run.method), []).append((run.seed, file))
    if not fits:
        return None
    targets = sorted({t for t, _ in fits}, key=natural_key)
    methods = method_order({m for _, m in fits})
    cols = len(methods) + 1
    fig, axes = plt.subplots(
        len(targets), cols, figsize=(2.4 * cols, 2.4 * len(targets)), squeeze=False
    )
    for row, target in zip(axes, targets, strict=True):
        seeds = [{s for s, _ in fits.get((target, m), [])} for m in methods]
        common = set.intersection(*[s for s in seeds if s])
        tables = {}
        for method in methods:
            options = dict(sorted(fits.get((target, method), [])))
            if options:
                seed = min(common) if common else min(options)
                tables[method] = (seed, pd.read_csv(options[seed]))
        first = next(iter(tables.values()))[1]
        side = round(math.sqrt(len(first)))
        extent = (first["x"].min(), first["x"].max(), first["y"].min(), first["y"].max())
        images = [_data_panel(first, runs, target, side)]
        images += [(f"{m} (seed {s})", t["model"]) for m, (s, t) in tables.items()]
        for ax, (title, values) in zip(row, images, strict=False):
            if values is not None:  # each panel on its own scale: shapes, not peak heights
                grid = np.asarray(values).reshape(side, side).T  # rows = y
                top = max(float(np.nanpercentile(grid, 99.8)), 1e-12)
                ax.imshow(grid, origin="lower", extent=extent, cmap="magma", vmin=0, vmax=top)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(images) :]:
            ax.set_visible(False)
        row[0].set_ylabel(short_label(target), fontsize=10)
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _data_panel(table: pd.DataFrame, runs: pd.DataFrame, target: str, side: int):
    """The data next to the fits: the run's training histogram, else (run folders written
    before it was saved) fresh draws from the target's config, else its true density."""
    if "data" in table:
        return "data", table["data"]
    draws = _fresh_draws(runs, target)
    if draws is not None:
        xs, ys = np.unique(table["x"]), np.unique(table["y"])
        edges = [_edges(xs), _edges(ys)]
        counts, _, _ = np.histogram2d(draws[:, 0], draws[:, 1], bins=edges)
        return "data (fresh draws)", counts.reshape(-1)
    return "target density", table.get("target")


def _edges(centres: np.ndarray) -> np.ndarray:
    half = (centres[1] - centres[0]) / 2
    return np.append(centres - half, centres[-1] + half)


def _fresh_draws(runs: pd.DataFrame, target: str, n: int = 50_000) -> np.ndarray | None:
    import yaml

    from icnn_bench.targets import build_target

    for run in runs[runs["target"] == target].itertuples():
        try:
            config = yaml.safe_load((Path(run.run_dir) / "config.yaml").read_text())
            source = build_target(config["target"]["name"], config["target"].get("params"))
            return source.sample(n, seed=0).numpy()
        except Exception:  # a picture is not worth failing a report over
            continue
    return None


def dwell_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Survival of shoulder spells (Kaplan-Meier, seeds pooled), a panel per target: how long
    a constrained entry, once on the softplus shoulder, stays there."""
    tables = []
    for run in runs[runs["status"] == "ok"].itertuples():
        file = Path(run.run_dir) / "dwell.csv"
        if file.exists():
            table = pd.read_csv(file)
            table["target"], table["method"] = run.target, run.method
            tables.append(table)
    if not tables:
        return None
    frame = pd.concat(tables, ignore_index=True)
    targets = sorted(frame["target"].unique(), key=natural_key)
    methods = method_order(frame["method"].unique())
    fig, axes = _panels(len(targets))
    for ax, target in zip(axes, targets, strict=False):
        for i, method in enumerate(methods):
            cell = frame[(frame["target"] == target) & (frame["method"] == method)]
            if cell.empty:
                continue
            pooled = cell.groupby("dwell_steps")[["at_risk", "ended"]].sum()
            survival = (1 - pooled["ended"] / pooled["at_risk"]).cumprod()
            ax.step(pooled.index, survival, where="post", color=_colour(method, i), label=method)
        ax.set_title(short_label(target), fontsize=10)
        ax.set_xlabel("steps on the shoulder")
        ax.set_ylabel("share of spells still on it")
        ax.set_ylim(0, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=max(1, len(labels)),
        frameon=False,
        bbox_to_anchor=(0.5, 1.04),
    )
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _crop_x(ax, table: pd.DataFrame) -> None:
    """Show where the target has mass, not the whole (wide) quadrature box."""
    p = table["target"].to_numpy()
    x = table["x"].to_numpy()
    cdf = np.cumsum(p) / max(p.sum(), 1e-300)
    lo = x[np.searchsorted(cdf, 0.001)]
    hi = x[min(np.searchsorted(cdf, 0.999), len(x) - 1)]
    pad = 0.15 * (hi - lo)
    ax.set_xlim(max(x[0], lo - pad), min(x[-1], hi + pad))


def digits_figure(real: np.ndarray, sampled: np.ndarray, path: Path, title: str) -> Path:
    """Real digits (left block) next to decoded model samples (right block)."""
    n = min(len(real), len(sampled), 16)
    fig, axes = plt.subplots(4, 9, figsize=(9, 4.2))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, 4)
        axes[row, col].imshow(real[i], cmap="gray_r", vmin=0, vmax=16)
        axes[row, col + 5].imshow(sampled[i], cmap="gray_r", vmin=0, vmax=16)
    axes[0, 1].set_title("test digits, encoded + decoded", loc="left", fontsize=9)
    axes[0, 6].set_title("EBM samples, decoded", loc="left", fontsize=9)
    fig.suptitle(title, fontsize=10)
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def dimension_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Per target family swept over dimension: KL (or test NLL when the truth is unknown)
    against d, mean ± std over seeds, one line per method."""
    if "dim" not in runs or "target_name" not in runs:
        return None
    ok = runs[(runs["status"] == "ok") & runs["dim"].notna()]
    families = [t for t, g in ok.groupby("target_name") if g["dim"].nunique() > 1]
    if not families:
        return None
    fig, axes = _panels(len(families), width=4.4, height=3.2)
    for ax, family in zip(axes, families, strict=False):
        rows = ok[ok["target_name"] == family]
        metric = "kl_mc" if "kl_mc" in rows and rows["kl_mc"].notna().any() else "test_nll"
        for i, method in enumerate(method_order(rows["method_name"].unique())):
            cell = rows[rows["method_name"] == method]
            stats = cell.groupby("dim")[metric].agg(["mean", "std"]).sort_index()
            ax.errorbar(
                stats.index,
                stats["mean"],
                yerr=stats["std"].fillna(0),
                marker="o",
                capsize=3,
                color=_colour(method, i),
                label=method,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dimension d")
        ax.set_ylabel("test NLL − entropy (nats)" if metric == "kl_mc" else "test NLL (nats)")
        ax.set_title(family)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "mean ± std over seeds; d > 2: log Z by importance sampling (biased low)",
        y=-0.02,
        fontsize=8,
    )
    fig.tight_layout()
    io.save_figure(path, fig)
    plt.close(fig)
    return path
