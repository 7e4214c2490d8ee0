"""Small pictures of one run (run.png), drawn without the report package (and its imports)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from icnn_bench import io
from icnn_bench.run_folder import DENSITY, FIGURE, METRICS, read_table


def crop_x(ax, table: pd.DataFrame) -> None:
    """Show where the target has mass, not the whole (wide) quadrature box."""
    p = table["target"].to_numpy()
    x = table["x"].to_numpy()
    cdf = np.cumsum(p) / max(p.sum(), 1e-300)
    lo = x[np.searchsorted(cdf, 0.001)]
    hi = x[min(np.searchsorted(cdf, 0.999), len(x) - 1)]
    pad = 0.15 * (hi - lo)
    ax.set_xlim(max(x[0], lo - pad), min(x[-1], hi + pad))


def run_figure(run_dir: Path) -> Path | None:
    """One run's own picture (run.png): its curve (grid KL where known, else validation
    NLL) and, in 1-D and 2-D, its fitted density next to the truth or the data."""
    run_dir = Path(run_dir)
    curve = read_table(run_dir, METRICS)
    if curve is None:
        return None
    table = read_table(run_dir, DENSITY)
    panels = 2 if table is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.2), layout="constrained")
    axes = np.atleast_1d(axes)
    metric = "kl" if "kl" in curve and curve["kl"].notna().any() else "val_nll"
    axes[0].plot(curve["step"], curve[metric], marker="o", ms=3, color="tab:green")
    if metric == "kl":
        axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("KL to the truth (grid)" if metric == "kl" else "validation NLL")
    axes[0].grid(alpha=0.3)
    if table is not None and "y" not in table:
        if "target" in table:
            axes[1].fill_between(table["x"], table["target"], color="0.85", label="target")
            crop_x(axes[1], table)
        axes[1].plot(table["x"], table["model"], color="tab:green", label="model")
        axes[1].set_xlabel("x")
        axes[1].set_ylabel("density")
        axes[1].legend(frameon=False, fontsize=8)
    elif table is not None:
        side = round(math.sqrt(len(table)))
        extent = (table["x"].min(), table["x"].max(), table["y"].min(), table["y"].max())
        grid = table["model"].to_numpy().reshape(side, side).T
        axes[1].imshow(grid, origin="lower", extent=extent, cmap="magma")
        axes[1].set_title("fitted density", fontsize=9)
    fig.suptitle(run_dir.name, fontsize=9)
    path = run_dir / FIGURE
    io.save_figure(path, fig)
    plt.close(fig)
    return path
