"""The GPU path, measured: the quick preset on the device and on the CPU (same seeds, metrics
compared), seed-stacked throughput on the 1-D recipe (1, 5, 30, 100 seeds a job), CP-Flow's
21-D exact and stochastic steps, peak device memory. One markdown file of figures.

    python scripts/gpu_check.py --out results/gpu.md                 # on a GPU machine
    python scripts/gpu_check.py --device cpu --small --out /tmp/gpu.md   # CI-sized, anywhere

About 8 minutes on one GPU at full size.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from icnn_bench import io
from icnn_bench.compose import compose
from icnn_bench.devices import resolve_device
from icnn_bench.errors import ConfigError
from icnn_bench.loop import OneSeed, SeedRun, StackedSeeds, train_loop
from icnn_bench.runner import prepare, run, seed_config

TOLERANCE = {"test_nll": 5e-3, "kl": 5e-3}  # float32 on two devices: kernels differ in order


def quick_on_both(device: str, small: bool, tmp: Path) -> pd.DataFrame:
    """The quick preset's cells on `device` and on the CPU, seed for seed."""
    targets = ["gumbel", "laplace"] if small else ["gumbel", "laplace", "gamma", "beta"]
    extra = ["trainer.steps=40", "trainer.eval_every=20"] if small else []
    rows = []
    for target in targets:
        for method in ("pgd", "softplus", "lift"):
            for seed in (0, 1):
                config = compose(["experiment=quick", f"target={target}", f"method={method}",
                                  f"seed={seed}", *extra])  # fmt: skip
                row = {"target": target, "method": method, "seed": seed}
                for where in dict.fromkeys([device, "cpu"]):
                    result = run(
                        {**config, "device": where}, tmp / f"{where}-{target}-{method}-{seed}"
                    )
                    row.update(
                        {f"{k}_{where}": result.get(k) for k in ("test_nll", "kl", "status")}
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def stacked_throughput(
    device: str, seeds_per_job: list[int], steps: int, tmp: Path
) -> pd.DataFrame:
    """Seed-steps per second on the 1-D recipe: S seeds as one stacked model vs one a job."""
    rows = []
    for method in ("pgd", "softplus", "lift"):
        base = compose(["experiment=paper_1d", "target=gumbel", f"method={method}"])
        base["device"] = device
        base["trainer"].update(steps=steps, eval_every=steps, checkpoint_every=None)
        for count in seeds_per_job:
            jobs = [prepare(seed_config(base, s), tmp / "stack") for s in range(count)]
            settings = jobs[0].settings
            runs = [SeedRun(j.model, j.split, settings, j.seed, []) for j in jobs]
            _sync(device)
            started = time.perf_counter()
            if count == 1:
                train_loop(runs, OneSeed(jobs[0].model, settings), settings)
            else:
                train_loop(runs, StackedSeeds([j.model for j in jobs], settings), settings)
            _sync(device)
            seconds = time.perf_counter() - started
            rows.append({"method": method, "seeds_per_job": count,
                         "seed_steps_per_s": count * steps / seconds})  # fmt: skip
    return pd.DataFrame(rows)


def cpflow_steps(device: str, small: bool, tmp: Path) -> pd.DataFrame:
    rows = []
    for route in ("exact", "stochastic"):
        overrides = ["experiment=paper_tabular_cpflow", "method=softplus", f"model.log_det={route}"]
        if small:
            overrides += ["model.depth=3", "trainer.batch_size=64", "data.n_train=2000"]
        config = compose(overrides)
        config["device"] = device
        job = prepare(config, tmp / f"cpflow-{route}")
        stepper = OneSeed(job.model, job.settings)
        run_ = SeedRun(job.model, job.split, job.settings, 0, [])
        times = []
        for _ in range(3 if small else 10):
            _sync(device)
            started = time.perf_counter()
            losses, norms, _ = stepper.backward([run_.next_batch()], record=False)
            stepper.update((torch.isfinite(losses) & torch.isfinite(norms)).tolist())
            _sync(device)
            times.append(time.perf_counter() - started)
        rows.append({"log_det": route, "ms_per_step": 1e3 * sorted(times)[len(times) // 2]})
    return pd.DataFrame(rows)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def markdown(frame: pd.DataFrame) -> str:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failed_runs(quick: pd.DataFrame) -> list[str]:
    """Cells that did not finish, or finished with a non-finite metric, on either device."""
    out = []
    for row in quick.to_dict("records"):
        cell = f"{row['target']}/{row['method']}/seed{row['seed']}"
        for key, value in row.items():
            if key.startswith("status_") and value != "ok":
                out.append(f"{cell} on {key.removeprefix('status_')}: {value}")
            elif key.startswith(("test_nll_", "kl_")) and not _finite(value):
                out.append(f"{cell} {key}: {value}")
    return out


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="CI-sized: a minute on a CPU")
    parser.add_argument("--out", type=Path, default=Path("results/gpu.md"))
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ConfigError as error:
        raise SystemExit(f"gpu_check: {error} (CI-sized on a CPU: --device cpu --small)") from None
    args.device = str(device)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        quick = quick_on_both(args.device, args.small, tmp)
        counts = [1, 5] if args.small else [1, 5, 30, 100]
        stacked = stacked_throughput(args.device, counts, 20 if args.small else 300, tmp)
        cpflow = cpflow_steps(args.device, args.small, tmp)
    other = [d for d in dict.fromkeys([args.device, "cpu"]) if d != "cpu"]
    differing = []
    for key, tol in TOLERANCE.items():
        for where in other:
            gap = (quick[f"{key}_{where}"] - quick[f"{key}_cpu"]).abs()
            for r, g in zip(quick.itertuples(), gap, strict=True):
                if g > tol:
                    differing.append(f"{r.target}/{r.method}/seed{r.seed} {key}: {g:.2e}")
    failed = failed_runs(quick)
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else platform.processor()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else math.nan
    text = "\n".join([
        "# The GPU path", "",
        f"`python scripts/gpu_check.py --device {args.device}{' --small' if args.small else ''}`"
        f" on {name or platform.machine()}, torch {torch.__version__}, "
        f"{time.perf_counter() - started:.0f} s in all.", "",
        "## The quick preset on the device and on the CPU (same seeds)", "",
        "Both devices train on the same batches (drawn on the CPU), so the two columns differ "
        "only by the order in which kernels sum.", "",
        f"Runs that failed or gave a non-finite metric: {', '.join(failed) or 'none'}.", "",
        f"Tolerance {TOLERANCE} (float32; kernels sum in another order). Beyond it: "
        + (", ".join(differing) if differing else "none") + ".", "",
        markdown(quick), "",
        "## Seeds stacked into one model (1-D recipe), seed-steps per second", "",
        markdown(stacked), "",
        "## CP-Flow, 21-D, one training step", "", markdown(cpflow), "",
        f"Peak device memory: {peak:.2f} GiB." if not math.isnan(peak) else "",
    ])  # fmt: skip
    io.write_text(args.out, text + "\n")
    print(text)
    if failed or differing:
        print(f"gpu_check: {len(failed)} failed runs, {len(differing)} beyond tolerance",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
