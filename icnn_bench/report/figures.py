"""Figures from run-folder files: curves with a band over seeds, and 1-D densities."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from icnn_bench import io
from icnn_bench.plotting import crop_x as _crop_x
from icnn_bench.report.data import RunFiles
from icnn_bench.report.tables import method_order, natural_key, short_label

# One fixed hue per packaged method, the same in every figure; a method's HK-initialised twin
# in a lighter shade of its hue. Methods of a user's own folder get hues from USER_HUES,
# which no packaged method uses.
PACKAGED_HUES = {
    "pgd": "tab:blue",
    "softplus": "tab:orange",
    "lift": "tab:green",
    "lift_noslack": "tab:red",
    "lift_nocond": "tab:purple",
    "lift_nostoch": "tab:brown",
    "lift_constpn": "tab:pink",
    "lift_indep": "tab:olive",
    "maf_reference": "tab:gray",
    "exp": "tab:cyan",
    "relu": "#8c6d31",
    "negexp": "#7b4173",
    "penalty": "#843c39",
    "pgd_hk": "#6baed6",
    "softplus_hk": "#fdae6b",
    "softplus_cpflow": "#e6550d",
}
USER_HUES = ["#000000", "#ff1493", "#4b0082", "#00a087", "#800000", "#5f9ea0", "#daa520"]
FALLBACK_HUES = ["#9edae5", "#c5b0d5", "#c49c94", "#dbdb8d", "#ad494a", "#5254a3"]


def method_colours() -> dict[str, str]:
    """The hue of every method the config folders know: packaged ones fixed, a user's from
    USER_HUES in the order of their names (the same in every figure of an installation)."""
    from icnn_bench import registry

    methods = set(registry.options("method"))
    names = sorted(methods | set(registry.options("model")))
    colours = {n: PACKAGED_HUES[n] for n in names if n in PACKAGED_HUES}
    packaged = [n for n in names if n not in colours and registry.packaged("method", n)]
    for i, name in enumerate(packaged):  # a packaged method added without a hue of its own
        colours[name] = FALLBACK_HUES[i % len(FALLBACK_HUES)]
    users = [n for n in names if n not in colours and n in methods]
    for i, name in enumerate(users):
        colours[name] = USER_HUES[i % len(USER_HUES)]
    return colours


def _colour(method: str, index: int) -> str:
    colours = method_colours()
    base = str(method).split(" [")[0]
    return colours.get(base, USER_HUES[(len(colours) + index) % len(USER_HUES)])


def _panels(n: int, width: float = 3.6, height: float = 2.8):
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(width * cols, height * rows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


LINE_STYLES = ["-", "--", ":", "-."]


def _styles(labels: list[str]) -> dict[str, tuple[str, str]]:
    """One hue per method, one line style per variant of it ("lift [trainer.lr=0.01]")."""
    styles, variants = {}, {}
    for i, label in enumerate(labels):
        base = str(label).split(" [")[0]
        seen = variants.setdefault(base, [])
        seen.append(label)
        styles[label] = (_colour(base, i), LINE_STYLES[(len(seen) - 1) % len(LINE_STYLES)])
    return styles


def _legend(fig, axes, caption: str | None = None) -> None:
    handles, labels = [], []
    for ax in axes:  # every method that appears anywhere, once
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        # as many columns as fit the figure's width, so one narrow panel keeps its width
        entry_inches = 0.55 + 0.075 * max(len(label) for label in labels)
        fit = int(fig.get_figwidth() / entry_inches)
        ncol = max(1, min(len(labels), 6, fit))
        fig.legend(handles, labels, loc="outside upper center", ncol=ncol, frameon=False)
    if caption:
        width = max(60, int(fig.get_figwidth() * 14))  # characters that fit the figure
        fig.supxlabel(textwrap.fill(caption, width), fontsize=8, color="0.3")


def curve_figure(
    curves: pd.DataFrame,
    metric: str,
    ylabel: str,
    path: Path,
    log_y: bool = False,
    relative: bool = False,
    caption: str | None = None,
    symlog: bool = False,
    linthresh: float = 1e-3,
) -> Path | None:
    """One panel per target, one hue per method (a line style per variant): the median over
    seeds with an inter-quartile band. `relative`: minus the best final median of the panel
    (how far each method is from the best one, on a symmetric-log axis). `symlog`: the values
    as they are on that axis (an estimate of a KL, which noise can push below 0), linear within
    ±`linthresh`; a panel whose values all lie above `linthresh` gets a plain log axis."""
    if curves.empty or metric not in curves or curves[metric].notna().sum() == 0:
        return None
    targets = sorted(curves["target"].dropna().unique(), key=natural_key)
    methods = method_order(curves["method"].unique())
    styles = _styles(methods)
    fig, axes = _panels(len(targets))
    counts = curves.dropna(subset=[metric]).groupby(["target", "method"])["seed"].nunique()
    one_count = counts.nunique() == 1  # then said once in the caption, not at every line's end
    clipped = False
    for ax, target in zip(axes, targets, strict=False):
        panel = curves[curves["target"] == target]
        stats = {
            method: panel[panel["method"] == method]
            .groupby("step")[metric]
            .quantile([0.25, 0.5, 0.75])
            .unstack()
            .dropna()
            for method in methods
        }
        stats = {m: st for m, st in stats.items() if not st.empty}
        offset = min(float(st[0.5].iloc[-1]) for st in stats.values()) if relative and stats else 0
        for method, st in stats.items():
            colour, style = styles[method]
            seeds = panel.loc[panel["method"] == method, "seed"].nunique()
            ax.plot(st.index, st[0.5] - offset, color=colour, ls=style, lw=1.5, label=method)
            ax.fill_between(
                st.index, st[0.25] - offset, st[0.75] - offset, color=colour, alpha=0.18, lw=0
            )
            if not one_count:
                ax.annotate(f"n={seeds}", (st.index[-1], st[0.5].iloc[-1] - offset), fontsize=6,
                            color=colour, xytext=(2, 0), textcoords="offset points")  # fmt: skip
        lowest = min((float(st.min().min()) for st in stats.values()), default=0.0)
        if log_y or (symlog and not relative and lowest > linthresh):  # nothing near or below 0
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            if high < 100 * low:  # under two decades: label 1, 2 and 5 of each, as plain numbers
                plain = matplotlib.ticker.FuncFormatter(_one_two_five)
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
        elif relative or symlog:
            ax.set_yscale("symlog", linthresh=linthresh)
            limits = relative_limits(stats, offset)
            if limits is not None:
                ax.set_ylim(*limits)
                clipped = True
        ax.set_title(short_label(target), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    caption = caption or "line: median over seeds; band: inter-quartile range"
    if one_count:
        caption += f"; {counts.iloc[0]} seeds per line"
    if clipped:
        caption += (
            f"; axis clipped at −{NLL_FLOOR:g} nat below "
            f"{'the best final value' if relative else 'zero'} and 10× the "
            "highest median: some seeds' values lie far outside (an estimated log Z gone "
            "wrong in those steps; metrics.csv holds them)"
        )
    _legend(fig, axes, caption)
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _one_two_five(value: float, _position: int) -> str:
    if value <= 0:
        return ""
    lead = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return f"{value:g}" if lead in (1, 2, 5) else ""


NLL_FLOOR = 1.0  # nats: a validation NLL this far below the best final one is an estimator's


def relative_limits(stats: dict[str, pd.DataFrame], offset: float) -> tuple[float, float] | None:
    """y-limits for a relative-NLL panel when some quartile lies absurdly far out (an
    estimator exploited by its EBM reaches -1e10), else None: autoscale."""
    values = pd.concat([st - offset for st in stats.values()])
    medians = pd.concat([st[0.5] - offset for st in stats.values()])
    low, high = float(values.min().min()), float(values.max().max())
    ceiling = 10 * max(float(medians.max()), 1.0)
    if low >= -NLL_FLOOR and high <= ceiling:
        return None
    return max(low, -NLL_FLOOR), min(high, ceiling)


def with_entropy_gap(curves: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`curves` with `nll_minus_entropy`: each evaluation's validation NLL minus its run's
    target entropy (runs.csv's `entropy`, where the truth is known), a sample estimate of KL."""
    if curves.empty or "val_nll" not in curves or "entropy" not in runs or "run_dir" not in runs:
        return curves
    entropy = pd.to_numeric(runs.set_index("run_dir")["entropy"], errors="coerce")
    if entropy.notna().sum() == 0:
        return curves
    gap = pd.to_numeric(curves["val_nll"], errors="coerce") - curves["run_dir"].map(entropy)
    return curves.assign(nll_minus_entropy=gap)


def _known(curves: pd.DataFrame, metric: str) -> pd.Series:
    """Rows of the targets where `metric` was ever recorded."""
    if metric not in curves:
        return pd.Series(False, index=curves.index)
    return curves.groupby("target")[metric].transform("count") > 0


def loss_figure(curves: pd.DataFrame, path: Path) -> list[Path | None]:
    """The gap between methods, each target drawn once, in the first of: an OT map's L2-UVP;
    KL to the truth on
    the grid (log axis); validation NLL minus the target's entropy where that is known
    (`<path>_nll_entropy.png` after a grid figure); else validation NLL minus the panel's best
    final value (`<path>_nll.png` after either). The first figure made takes `path`."""
    if curves.empty:
        return []
    transport = _known(curves, "val_l2_uvp")  # OT maps: scored by their map, not an NLL
    grid = _known(curves, "kl") & ~transport
    entropy = _known(curves, "nll_minus_entropy") & ~grid & ~transport
    rest = ~grid & ~entropy & ~transport
    band = "line: median over seeds, band: inter-quartile range"
    kinds = [
        (transport, "", dict(metric="val_l2_uvp", ylabel="L2-UVP (%), validation", log_y=True,
                             caption="L2-UVP of the learned map against the true OT map on the "
                             f"validation draws of P at each evaluation; {band}")),
        (grid, "", dict(metric="kl", ylabel="KL(target ‖ model), grid", log_y=True,
                        caption="KL on the quadrature grid at each evaluation (exact up to the "
                        f"grid); {band}")),
        (entropy, "_nll_entropy", dict(metric="nll_minus_entropy",
                                       ylabel="val NLL − entropy (nats)", symlog=True,
                                       caption="validation NLL minus the target's entropy: a "
                                       "sample estimate of KL (±1/√n_val noise; where log Z is "
                                       "estimated by importance sampling it is biased low, "
                                       f"so it can fall below 0); {band}")),
        (rest, "_nll", dict(metric="val_nll", ylabel="val NLL − best final (nats)",
                            relative=True, caption="validation NLL minus the best method's "
                            f"final median; {band}")),
    ]  # fmt: skip
    made: list[Path | None] = []
    for rows, suffix, spec in kinds:
        if rows.any():
            where = path.with_name(f"{path.stem}{suffix}{path.suffix}") if made else path
            made.append(curve_figure(curves[rows], path=where, **spec))
    return made


def transport_figure(runs: pd.DataFrame, path: Path, store: RunFiles | None = None) -> Path | None:
    """2-D OT pairs, a panel per method (lowest finished seed), at most five to a row: draws of
    P (grey), their true images T*(x) (black) and the learned ones (colour), with a segment
    from each true image to the learned one (the map's error). The frame is the truth's, so a
    map that throws points far away does not shrink the others; the title counts those."""
    store = store or RunFiles()
    maps = {}
    for run in runs[runs["status"] == "ok"].sort_values("seed").itertuples():
        table = store.transport_map(run.run_dir)
        if table is not None:
            uvp = getattr(run, "l2_uvp", math.nan)
            maps.setdefault((run.target, run.method), (run.seed, uvp, table))
    if not maps:
        return None
    targets = sorted({t for t, _ in maps}, key=natural_key)
    methods = method_order({m for _, m in maps})
    columns = min(5, len(methods))
    rows_per_target = math.ceil(len(methods) / columns)
    fig, axes = plt.subplots(
        len(targets) * rows_per_target, columns,
        figsize=(2.6 * columns, 2.7 * len(targets) * rows_per_target),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for ax in axes.flat:
        ax.set_axis_off()
    for t, target in enumerate(targets):
        for k, method in enumerate(methods):
            if (target, method) not in maps:
                continue
            ax = axes[t * rows_per_target + k // columns][k % columns]
            ax.set_axis_on()
            ax.set_xticks([]), ax.set_yticks([])
            seed, uvp, table = maps[(target, method)]
            colour = _colour(method, k)
            ax.scatter(table["x"], table["y"], s=2, color="0.8", label="P")
            ax.scatter(table["tx"], table["ty"], s=2, color="black", label="T*(x)")
            ax.scatter(table["mx"], table["my"], s=2, color=colour, label="learned T(x)")
            shown = table.head(120)
            for a, b, c, d in zip(shown["tx"], shown["ty"], shown["mx"], shown["my"], strict=True):
                ax.plot([a, c], [b, d], color=colour, lw=0.5, alpha=0.7)
            (x0, x1), (y0, y1) = (
                _padded_range(table[["x", "tx"]]),
                _padded_range(table[["y", "ty"]]),
            )
            ax.set_xlim(x0, x1), ax.set_ylim(y0, y1)
            outside = ~(table["mx"].between(x0, x1) & table["my"].between(y0, y1))
            title = f"{method} (seed {seed})\nL2-UVP {uvp:.3g}%"
            if outside.any():
                title += f", {int(outside.sum())}/{len(table)} off frame"
            ax.set_title(title, fontsize=8)
            if k % columns == 0:
                ax.set_ylabel(short_label(target), fontsize=8)
    next(ax for ax in axes.flat if ax.axison).legend(fontsize=6, markerscale=3, loc="best")
    fig.suptitle("2-D OT: P (grey), true images T*(x) (black), learned T(x) (colour); "
                 "segments: error of 120 points", fontsize=9)  # fmt: skip
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _padded_range(values: pd.DataFrame, pad: float = 0.15) -> tuple[float, float]:
    low, high = float(values.min().min()), float(values.max().max())
    margin = pad * (high - low or 1.0)
    return low - margin, high + margin


def density_figure(runs: pd.DataFrame, path: Path, store: RunFiles | None = None) -> Path | None:
    """Per 1-D target: the true density and each method's fit (lowest finished seed)."""
    store = store or RunFiles()
    fits = []
    for run in runs[runs["status"] == "ok"].itertuples():
        if getattr(run, "dim", 1) == 1 and store.density(run.run_dir) is not None:
            fits.append((run.target, run.method, run.seed, run.run_dir))
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
            table = store.density(files[(method, seed if seed in mine else mine[0])])
            if not truth_drawn and "target" in table:
                ax.fill_between(table["x"], table["target"], color="0.85", label="target")
                _crop_x(ax, table)
                truth_drawn = True
            ax.plot(table["x"], table["model"], color=_colour(method, i), lw=1.3, label=method)
        title = short_label(target)
        ax.set_title(title if seed is None else f"{title} (seed {seed})", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("density")
    _legend(fig, axes, "grey: the target's density; lines: each method's fit (one seed)")
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def heatmap_figure(runs: pd.DataFrame, path: Path, store: RunFiles | None = None) -> Path | None:
    """2-D targets: one row per target; the training data's histogram, then each method's
    fitted density (lowest seed all methods share); each panel scaled to its own maximum."""
    store = store or RunFiles()
    fits: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for run in runs[runs["status"] == "ok"].itertuples():
        if getattr(run, "dim", None) == 2 and store.density(run.run_dir) is not None:
            fits.setdefault((run.target, run.method), []).append((run.seed, run.run_dir))
    if not fits:
        return None
    targets = sorted({t for t, _ in fits}, key=natural_key)
    methods = method_order({m for _, m in fits})
    cols = len(methods) + 1
    fig, axes = plt.subplots(
        len(targets),
        cols,
        figsize=(2.4 * cols + 0.8, 2.4 * len(targets) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    panels = []
    for row, target in zip(axes, targets, strict=True):
        seeds = [{s for s, _ in fits.get((target, m), [])} for m in methods]
        common = set.intersection(*[s for s in seeds if s])
        tables = {}
        for method in methods:
            options = dict(sorted(fits.get((target, method), [])))
            if options:
                seed = min(common) if common else min(options)
                tables[method] = (seed, store.density(options[seed]))
        first = next(iter(tables.values()))[1]
        side = round(math.sqrt(len(first)))
        extent = (first["x"].min(), first["x"].max(), first["y"].min(), first["y"].max())
        images = [_data_panel(first, runs, target, side)]
        images += [(f"{m} (seed {s})", t["model"]) for m, (s, t) in tables.items()]
        window = _mass_window(first, images[0][1], side)
        for ax, (title, values) in zip(row, images, strict=False):
            if values is not None:
                grid = np.asarray(values).reshape(side, side).T  # rows = y
                panels.append((ax, grid, extent))
            ax.set_xlim(window[:2]), ax.set_ylim(window[2:])
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in row[len(images) :]:
            ax.set_visible(False)
        row[0].set_ylabel(short_label(target), fontsize=10)
    # one colour scale for the whole figure (a square-root scale, so that a flat density
    # stays visible next to a peaked one), with its colour bar
    top = max(max(float(np.nanpercentile(g, 99.8)) for _, g, _ in panels), 1e-12)
    norm = matplotlib.colors.PowerNorm(gamma=0.5, vmin=0, vmax=top)
    image = None
    for ax, grid, extent in panels:
        image = ax.imshow(
            grid, origin="lower", extent=extent, cmap="magma", norm=norm, aspect="auto"
        )
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="density (square-root scale)")
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _mass_window(table: pd.DataFrame, data, side: int) -> tuple[float, float, float, float]:
    """Where the picture is: the part of the grid holding the truth's mass (else the data's),
    so that a wide quadrature box does not shrink the target to a corner."""
    reference = table.get("target", data)
    xs, ys = np.unique(table["x"]), np.unique(table["y"])
    if reference is None:
        return xs[0], xs[-1], ys[0], ys[-1]
    grid = np.nan_to_num(np.asarray(reference, dtype=float).reshape(side, side))  # [x, y]
    shown = grid > 1e-3 * grid.max() if grid.max() > 0 else np.ones_like(grid, dtype=bool)
    cols, rows = np.flatnonzero(shown.any(1)), np.flatnonzero(shown.any(0))
    pad_x, pad_y = 2 * (xs[1] - xs[0]), 2 * (ys[1] - ys[0])
    return (
        max(xs[0], xs[cols[0]] - pad_x), min(xs[-1], xs[cols[-1]] + pad_x),
        max(ys[0], ys[rows[0]] - pad_y), min(ys[-1], ys[rows[-1]] + pad_y),
    )  # fmt: skip


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
    from icnn_bench.run_folder import read_config
    from icnn_bench.targets import build_target

    for run in runs[runs["target"] == target].itertuples():
        try:
            config = read_config(Path(run.run_dir)) or {}
            source = build_target(config["target"]["name"], config["target"].get("params"))
            return source.sample(n, seed=0).numpy()
        except Exception:  # a picture is not worth failing a report over
            continue
    return None


def dwell_figure(runs: pd.DataFrame, path: Path, store: RunFiles | None = None) -> Path | None:
    """Survival of shoulder spells (Kaplan-Meier, seeds pooled), a panel per target: how long
    a constrained entry, once on the softplus shoulder, stays there."""
    store = store or RunFiles()
    tables = []
    for run in runs[runs["status"] == "ok"].itertuples():
        table = store.dwell(run.run_dir)
        if table is not None:
            table["target"], table["method"] = run.target, run.method
            tables.append(table)
    if not tables:
        return None
    frame = pd.concat(tables, ignore_index=True)
    if frame["dwell_steps"].nunique() < 2:  # every spell one evaluation long: nothing to see
        return None
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
    _legend(
        fig,
        axes,
        "Kaplan-Meier survival of shoulder spells (seeds pooled): of the constrained entries "
        "that fell on the softplus shoulder (sigmoid(u) < 0.05), the share still there after "
        "so many steps; pgd has a bound at 0, not a shoulder",
    )
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def digits_figure(
    real: np.ndarray, sampled: np.ndarray, path: Path, title: str, vmax: float = 16.0
) -> Path:
    """Real digits (left block) next to decoded model samples (right block); pixel values
    from 0 (white) to vmax (black)."""
    n = min(len(real), len(sampled), 16)
    fig, axes = plt.subplots(4, 9, figsize=(9, 4.2))
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        row, col = divmod(i, 4)
        axes[row, col].imshow(real[i], cmap="gray_r", vmin=0, vmax=vmax)
        axes[row, col + 5].imshow(sampled[i], cmap="gray_r", vmin=0, vmax=vmax)
    axes[0, 1].set_title("test digits, encoded + decoded", loc="left", fontsize=9)
    axes[0, 6].set_title("EBM samples, decoded", loc="left", fontsize=9)
    fig.suptitle(title, fontsize=10)
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def dimension_figure(
    runs: pd.DataFrame, path: Path, recheck: pd.DataFrame | None = None
) -> Path | None:
    """Per target family swept over dimension: KL (or test NLL when the truth is unknown)
    against d, mean ± std over seeds, one line per method. `recheck` (recheck_log_z.csv:
    runs whose importance-sampled log Z was estimated again with more draws) replaces those
    runs' test NLL by the rechecked one, so the figure shows what the report stands by."""
    if "dim" not in runs or "target_name" not in runs:
        return None
    ok = runs[(runs["status"] == "ok") & runs["dim"].notna()].copy()
    rechecked = 0
    if recheck is not None and {"run", "recheck_test_nll"} <= set(recheck) and "run" in ok:
        corrected = recheck.set_index("run")["recheck_test_nll"]
        shift = ok["run"].map(corrected) - pd.to_numeric(ok["test_nll"], errors="coerce")
        rechecked = int(shift.notna().sum())
        for column in ("test_nll", "kl_mc"):
            if column in ok:
                ok[column] = pd.to_numeric(ok[column], errors="coerce") + shift.fillna(0.0)
    families = [t for t, g in ok.groupby("target_name") if g["dim"].nunique() > 1]
    if not families:
        return None
    fig, axes = _panels(len(families), width=4.4, height=3.2)
    for ax, family in zip(axes, families, strict=False):
        rows = ok[ok["target_name"] == family]
        metric = "kl_mc" if "kl_mc" in rows and rows["kl_mc"].notna().any() else "test_nll"
        transport = "l2_uvp" in rows and rows["l2_uvp"].notna().any()
        metric = "l2_uvp" if transport else metric
        off_scale = [] if transport else _off_scale(rows, metric)
        for i, method in enumerate(method_order(rows["method_name"].unique())):
            if method in off_scale:
                continue
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
        labels = {"kl_mc": "test NLL − entropy (nats)", "l2_uvp": "L2-UVP (%), test draws"}
        ax.set_ylabel(labels.get(metric, "test NLL (nats)"))
        if transport:
            ax.set_yscale("log")
        ax.set_title(
            family if not off_scale else f"{family}\n(off the scale: {', '.join(off_scale)})"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    transport = "l2_uvp" in ok and ok["l2_uvp"].notna().any()
    note = "mean ± std over seeds" + (
        "" if transport else "; d > 2: log Z by importance sampling (biased low)"
    )
    if rechecked:
        samples = int(recheck["samples"].max()) if "samples" in recheck else 0
        note += f"; {rechecked} runs' log Z re-estimated with {samples} draws (recheck_log_z.csv)"
    fig.supxlabel(textwrap.fill(note, 110), fontsize=8, color="0.3")
    io.save_figure(path, fig)
    plt.close(fig)
    return path


def _off_scale(rows: pd.DataFrame, metric: str) -> list[str]:
    """Methods whose mean, at every d, lies more than ten times the spread between the best
    and the typical method above the typical one (e.g. an NLL of 10^5 where the rest sit near
    10): drawn, they would flatten every other line; the title names them instead."""
    means = rows.groupby(["dim", "method_name"])[metric].mean().unstack()
    typical, best = means.median(axis=1), means.min(axis=1)
    limit = typical + 10 * (typical - best).clip(lower=1e-12)
    beyond = means.gt(limit, axis=0).all(axis=0)
    return sorted(beyond[beyond].index) if beyond.sum() < len(beyond) / 2 else []


def cd_figure(board, path: Path) -> Path | None:
    """The critical-difference diagram of a leaderboard (Demšar 2006): mean ranks on an axis,
    methods that Nemenyi's test does not tell apart joined by a bar."""
    if board is None or board.nemenyi is None:
        return None
    import scikit_posthocs as sp

    n, k = board.ranks.shape
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * k), layout="constrained")
    colours = {m: _colour(m, i) for i, m in enumerate(board.methods)}
    sp.critical_difference_diagram(
        board.mean_ranks, board.nemenyi, ax=ax, color_palette=colours, alpha=0.05
    )
    ax.set_title(
        f"mean rank over {n} (target, seed) cells (1 = best); bars: not told apart by "
        f"Nemenyi at α = 0.05 (CD {board.critical_difference:.2f})",
        fontsize=9,
    )
    io.save_figure(path, fig)
    plt.close(fig)
    return path
