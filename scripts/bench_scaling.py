"""How a training step's cost grows: against ICNN width, depth and batch size per method on
the 1-D recipe, and against input dimension for CP-Flow's exact and stochastic log-det, on
log-log axes with the floors (measured GEMM rate, memory bandwidth) drawn in.

    OMP_NUM_THREADS=1 python scripts/bench_scaling.py [--out results/bench_scaling] [--quick]

One thread; each point is the median of a few blocks of training steps, the methods of a
point timed one after another.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from bench import STEPS, Timed, compose_config, floors  # scripts/ is on sys.path

from icnn_bench import io
from icnn_bench.runner import prepare
from icnn_bench.timing import load_average, machine_description

METHODS = ("pgd", "softplus", "lift")
GALLERY = ["experiment=paper_1d", "target=gumbel"]
CPFLOW = [
    "experiment=paper_tabular_cpflow",
    "target=rotated_product",
    "model.width=64",
    "model.depth=4",
    "trainer.batch_size=256",
    "data.n_train=2000",
    "data.n_val=200",
    "data.n_test=200",
    "model.max_exact_dim=128",
    "method=softplus",
]


def step_ms(overrides: list[str], blocks: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        stepper = Timed(prepare(compose_config(overrides), Path(tmp)))
        stepper.steps(2)
        stepper.stepper.clear()
        for _ in range(blocks):
            stepper.steps(steps)
        return statistics.median(stepper.step_ms)


def sweep_ebm(axis: str, values: list[int], blocks: int) -> list[dict]:
    rows = []
    for value in values:
        for method in METHODS:
            overrides = [*GALLERY, f"method={method}", f"{axis}={value}", "trainer.steps=3000"]
            steps = max(2, STEPS["1-D"] // max(1, value // 256 if axis != "model.depth" else 1))
            ms = step_ms(overrides, blocks, steps)
            rows.append({"axis": axis, "value": value, "method": method, "ms": ms})
            print(f"{axis}={value} {method}: {ms:.2f} ms", flush=True)
    return rows


def sweep_cpflow(dims: list[int], blocks: int) -> list[dict]:
    rows = []
    for dim in dims:
        for route in ("exact", "stochastic"):
            overrides = [*CPFLOW, f"target.params.dim={dim}", f"model.log_det={route}"]
            ms = step_ms(overrides, blocks, 2)
            rows.append({"axis": "dim", "value": dim, "method": route, "ms": ms})
            print(f"d={dim} {route}: {ms:.2f} ms", flush=True)
    return rows


def floor_ms(axis: str, value: int, method: str, rates: dict) -> float:
    """The larger of the compute floor (ICNN forward + backward on batch + quadrature nodes
    at the measured GEMM rate) and, for the lift, the memory floor of its readout."""
    width = value if axis == "model.width" else 128
    depth = value if axis == "model.depth" else 3
    batch = value if axis == "trainer.batch_size" else 256
    points = batch + 128
    flops = 3 * 2 * points * ((depth - 1) * width * width + (2 * depth + 1) * width)
    compute = flops / (rates["sgemm_gflops"] * 1e9) * 1e3
    if method != "lift":
        return compute
    readout = ((depth - 1) * (width * width + 2 * width) + 3 * width + 1) * 96
    memory = 12 * 4 * readout / (rates["bandwidth_gb_s"] * 1e9) * 1e3
    return max(compute, memory)


def figure(frame: pd.DataFrame, rates: dict, path: Path) -> None:
    axes_names = ["model.width", "model.depth", "trainer.batch_size", "dim"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), layout="constrained")
    colours = {"pgd": "tab:blue", "softplus": "tab:orange", "lift": "tab:green"}
    colours |= {"exact": "tab:red", "stochastic": "tab:purple"}
    for ax, axis in zip(axes, axes_names, strict=True):
        part = frame[frame["axis"] == axis]
        for method, rows in part.groupby("method", sort=False):
            rows = rows.sort_values("value")
            ax.plot(rows["value"], rows["ms"], "o-", color=colours[method], label=method)
            if axis != "dim":
                floor = [floor_ms(axis, v, method, rates) for v in rows["value"]]
                ax.plot(rows["value"], floor, ":", color=colours[method], lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel({"dim": "input dimension d (CP-Flow)"}.get(axis, axis))
        ax.set_ylabel("ms per training step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, frameon=False)
    fig.supxlabel(
        f"one thread; dotted: floors from the measured sgemm rate ({rates['sgemm_gflops']:.0f} "
        f"GFLOP/s) and memory bandwidth ({rates['bandwidth_gb_s']:.0f} GB/s; the lift's "
        "readout, ~12 passes a step)",
        fontsize=8,
        color="0.3",
    )
    io.save_figure(path, fig)
    plt.close(fig)


def slopes(frame: pd.DataFrame) -> pd.DataFrame:
    """Log-log growth exponent per axis and method (least squares over the measured points)."""
    rows = []
    for (axis, method), points in frame.groupby(["axis", "method"], sort=False):
        x, y = points["value"].map(math.log), points["ms"].map(math.log)
        slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        span = f"{points['value'].iloc[0]:g}..{points['value'].iloc[-1]:g}"
        ends = {"first_ms": points["ms"].iloc[0], "last_ms": points["ms"].iloc[-1]}
        rows.append({"axis": axis, "method": method, "slope": slope, "range": span, **ends})
    return pd.DataFrame(rows)


def markdown(frame: pd.DataFrame, machine: str, loads: tuple[str, str]) -> str:
    table = slopes(frame)
    dims = frame[frame["axis"] == "dim"].pivot(index="value", columns="method", values="ms")
    cheaper = dims[dims["stochastic"] < dims["exact"]]
    cross = (
        f"the stochastic log-det is cheaper than the exact one from d = {int(cheaper.index.min())}"
        if len(cheaper)
        else "the exact log-det is cheaper at every d measured"
    )
    lines = [
        "# How a training step's cost grows",
        "",
        "`OMP_NUM_THREADS=1 python scripts/bench_scaling.py`: one thread, each point the median",
        "of blocks of training steps (the 1-D gallery recipe on gumbel, one setting changed at a",
        "time; CP-Flow: rotated_product, width 64 × 4, batch 256). Dotted lines in the figure:",
        "the floors from the measured sgemm rate and memory bandwidth.",
        "",
        f"- Machine: {machine}; load average at start {loads[0]}, at end {loads[1]}",
        f"- CP-Flow: {cross}.",
        "",
        "![cost growth](bench_scaling.png)",
        "",
        "Growth exponent (slope of log time against log setting, least squares over the points):",
        "",
        "| axis | method | range | ms first | ms last | exponent |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {r.axis} | {r.method} | {r.range} | {r.first_ms:.3g} | {r.last_ms:.3g} "
            f"| {r.slope:.2f} |"
            for r in table.itertuples()
        ),
        "",
        "The numbers behind the figure: bench_scaling.csv.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_scaling"))
    parser.add_argument("--quick", action="store_true", help="fewer points and blocks")
    parser.add_argument(
        "--from-csv", action="store_true", help="redraw the figure and markdown from <out>.csv"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = floors(3_276_033, 384, 128, 3)
    if args.from_csv:
        frame = pd.read_csv(args.out.with_suffix(".csv"))
        loads = ("(not recorded)", "(not recorded)")
    else:
        blocks = 2 if args.quick else 5
        start = load_average()
        rows = []
        widths = [32, 128] if args.quick else [32, 64, 128, 256, 512]
        rows += sweep_ebm("model.width", widths, blocks)
        rows += sweep_ebm("model.depth", [2, 4] if args.quick else [2, 3, 5, 8], blocks)
        batches = [64, 1024] if args.quick else [64, 256, 1024, 4096]
        rows += sweep_ebm("trainer.batch_size", batches, blocks)
        rows += sweep_cpflow([2, 16] if args.quick else [2, 4, 8, 16, 32, 64], blocks)
        frame = pd.DataFrame(rows)
        frame["floor_ms"] = [
            floor_ms(a, v, m, rates) if a != "dim" else float("nan")
            for a, v, m in zip(frame["axis"], frame["value"], frame["method"], strict=True)
        ]
        loads = (str(start), str(load_average()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    io.write_csv(args.out.with_suffix(".csv"), frame)
    figure(frame, rates, args.out.with_suffix(".png"))
    io.write_text(args.out.with_suffix(".md"), markdown(frame, machine_description(), loads))
    print(markdown(frame, machine_description(), loads))
    print(f"wrote {args.out.with_suffix('.png')}, .csv and .md ({time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
