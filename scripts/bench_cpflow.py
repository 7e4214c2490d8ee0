"""Time one CP-Flow training step (forward + backward + Adam) per log-determinant route.

    OMP_NUM_THREADS=1 python scripts/bench_cpflow.py [--out results/bench_cpflow.md]

Quick smoke run (seconds):

    OMP_NUM_THREADS=1 python scripts/bench_cpflow.py --steps-warmup 5 --repeats 2 \\
        --batch 64 --depth 3 --out /tmp/bench_cpflow.md

One process, one thread. A softplus CP-Flow is first trained for --steps-warmup steps with the
exact log-det (at initialisation the Hessian is close to a multiple of the identity and CG
converges in a couple of iterations, which would flatter the CG route); its state is then
copied into one model per route and the routes are timed round-robin, so that machine noise
hits all of them alike. Writes a markdown table and the raw timings (same stem, .csv).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.func import grad, hessian, vmap

from icnn_bench import io
from icnn_bench.build import TrainerSettings, model_from_config
from icnn_bench.loop import OneSeed
from icnn_bench.models import cpflow as flow_module
from icnn_bench.models.cpflow import ConvexPotentialFlow, PotentialBlock
from icnn_bench.models.potential import gradient_and_hessian, potential, standard_normal_log_prob
from icnn_bench.run_folder import read_config
from icnn_bench.targets import Target, build_target
from icnn_bench.timing import load_average, machine_description, quartiles

TARGET_RATIO = 2.0  # the target: exact step within 2x of the CG estimator's step
NEAR_IDENTITY_ITERS = 3.0  # CG this fast means the Hessians are still close to c I
CG = "cg"
EXACT_CHUNKED = "exact, structured, chunked"
EXACT_UNCHUNKED = "exact, structured, unchunked"
NAIVE = "exact, naive torch.func"
METHOD_ROW = "exact chunked, method={}"


@dataclass
class Route:
    """One row of the table: a model and the package's stepper that trains it (the one the
    training loop drives: zero_grad, loss and backward, clipping, fused Adam, projection)."""

    name: str
    method: str
    model: ConvexPotentialFlow
    stepper: OneSeed
    note: str = ""
    times_ms: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    cg_iterations: list[float] = field(default_factory=list)


@dataclass
class WarmUp:
    """What the report says about the warmed-up state every route starts from."""

    seconds: float
    conditioning: tuple[float, float]  # median and largest Hessian condition number
    check: tuple[float, float] | None  # the model's exact loss and the naive one


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="tabular21", help="icnn_bench target name")
    parser.add_argument("--dim", type=int, default=21)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=10, help="hidden layers of the ICNN")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--train-chunk", type=int, default=128, help="exact route's chunk rows")
    parser.add_argument("--cg-iters", type=int, default=32)
    parser.add_argument("--cg-rtol", type=float, default=1e-4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--grad-clip",
        type=float,
        default=1.0,
        help="clip the gradient norm as the training loop does (0: no clipping)",
    )
    parser.add_argument("--steps-warmup", type=int, default=300, help="exact softplus training")
    parser.add_argument("--untimed", type=int, default=2, help="untimed steps per route first")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per route")
    parser.add_argument("--n-data", type=int, default=32_768, help="pool the batches come from")
    parser.add_argument(
        "--methods",
        default="pgd,lift",
        help="comma list of extra exact-chunked rows per method (softplus is the main rows' "
        "method); empty for none",
    )
    parser.add_argument("--skip-naive", action="store_true", help="leave out the torch.func row")
    parser.add_argument(
        "--from-run",
        type=Path,
        default=None,
        help="a finished softplus cpflow run folder to time at, instead of the warm-up",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_cpflow.md"))
    args = parser.parse_args(argv)
    for key in ("dim", "width", "depth", "batch", "train_chunk", "repeats", "n_data"):
        if getattr(args, key) <= 0:
            parser.error(f"--{key.replace('_', '-')} must be positive")
    if args.steps_warmup < 0 or args.untimed < 0:
        parser.error("--steps-warmup and --untimed must be >= 0")
    if args.batch > args.n_data:
        parser.error("--batch must not exceed --n-data")
    return args


def command_line() -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads is not None else ""
    return prefix + shlex.join(["python", *sys.argv])


# --- models --------------------------------------------------------------------------------


def flow_config(args: argparse.Namespace, method: str, log_det: str, chunk: int) -> dict:
    model = {
        "name": "cpflow",
        "width": args.width,
        "depth": args.depth,
        "alpha": 0.0,
        "normalise_positive": True,
        "log_det": log_det,
        "train_chunk": chunk,
        "cg_iters": args.cg_iters,
        "cg_rtol": args.cg_rtol,
    }
    return {"model": model, "method": {"name": method}}


def build_flow(
    args: argparse.Namespace,
    target: Target,
    method: str = "softplus",
    log_det: str = "exact",
    chunk: int | None = None,
    train: Tensor | None = None,
) -> ConvexPotentialFlow:
    config = flow_config(args, method, log_det, args.train_chunk if chunk is None else chunk)
    model = model_from_config(config, target, args.seed, train=train)
    assert isinstance(model, ConvexPotentialFlow)
    return model


def package_stepper(model: ConvexPotentialFlow, args: argparse.Namespace) -> OneSeed:
    settings = TrainerSettings(
        lr=args.lr, grad_clip=args.grad_clip if args.grad_clip > 0 else None, checkpoint_every=None
    )
    return OneSeed(model, settings)


def transfer_state(warm: ConvexPotentialFlow, model: ConvexPotentialFlow) -> str:
    """Copy the warmed-up flow into `model`; returns a note for the table. A model of another
    method keeps its own constraint parameters (they mean something else there): only
    ActNorm and the w0/w1 scales carry over."""
    state = warm.state_dict()
    if type(model.blocks[0].method) is type(warm.blocks[0].method):
        model.load_state_dict(state)
        return ""
    own = model.state_dict()
    shared = {
        k: v
        for k, v in state.items()
        if k in own and own[k].shape == v.shape and ".method." not in k
    }
    model.load_state_dict(shared, strict=False)
    return "ICNN weights at initialisation (only ActNorm and w0/w1 from the warm-up)"


# --- the naive reference -------------------------------------------------------------------


def naive_block(block: PotentialBlock, x: Tensor, conditioning: Tensor) -> tuple[Tensor, Tensor]:
    """y = grad F(x) and log det Hess F(x) per sample, by torch.func.grad / hessian + slogdet."""
    params = block.method(conditioning)

    def potential_one(v: Tensor) -> Tensor:
        return potential(params, v.unsqueeze(0), block.spec, block.w0, block.w1)[0]

    y = vmap(grad(potential_one))(x)
    sign, log_abs_det = torch.linalg.slogdet(vmap(hessian(potential_one))(x))
    if not bool((sign > 0).all()):
        raise FloatingPointError("naive route: a Hessian is not positive definite")
    return y, log_abs_det


def naive_loss(model: ConvexPotentialFlow, batch: Tensor) -> Tensor:
    """The model's training loss, recomputed as ConvexPotentialFlow._log_prob does, per block
    ActNorm then potential, with generic torch.func derivatives instead of the structured ones."""
    conditioning = batch.detach()
    x = batch
    total = torch.zeros(batch.shape[0], dtype=batch.dtype, device=batch.device)
    for index, block in enumerate(model.blocks):
        if model.actnorms is not None:
            x, log_det = model.actnorms[index](x)
            total = total + log_det
        x, log_det = naive_block(block, x, conditioning)
        total = total + log_det
    return -(standard_normal_log_prob(x) + total).mean()


def naive_loss_backward(model: ConvexPotentialFlow) -> Callable[[Tensor], Tensor]:
    def run(batch: Tensor) -> Tensor:
        loss = naive_loss(model, batch)
        loss.backward()
        return loss.detach()

    return run


def check_naive_agrees(model: ConvexPotentialFlow, batch: Tensor) -> tuple[float, float]:
    """The model's exact loss and the naive one on the same state; raises beyond 1e-3 relative."""
    exact = float(model.loss(batch).detach())
    naive = float(naive_loss(model, batch).detach())
    if not math.isclose(naive, exact, rel_tol=1e-3):
        raise AssertionError(f"naive loss {naive:.6g} != model's exact loss {exact:.6g}")
    return exact, naive


@torch.no_grad()
def hessian_conditioning(model: ConvexPotentialFlow, batch: Tensor) -> tuple[float, float]:
    """Median and largest condition number of the blocks' Hessians on `batch`."""
    x = batch
    conditions = []
    for index, block in enumerate(model.blocks):
        if model.actnorms is not None:
            x, _ = model.actnorms[index](x)
        x, hess = gradient_and_hessian(block.method(batch), x, block.spec, block.w0, block.w1)
        eigenvalues = torch.linalg.eigvalsh(hess.double())
        conditions.append(eigenvalues[:, -1] / eigenvalues[:, 0])
    condition = torch.cat(conditions)
    return float(condition.median()), float(condition.max())


# --- training steps ------------------------------------------------------------------------


def train_step(route: Route, batch: Tensor) -> Tensor:
    """One step as the training loop takes it: the stepper's two halves around the finite check."""
    losses, norms, _ = route.stepper.backward([batch], record=False)
    keep = (torch.isfinite(losses) & torch.isfinite(norms)).tolist()
    route.stepper.update(keep)
    return losses[0]


def warm_up_model(args: argparse.Namespace, target: Target, data: Tensor) -> ConvexPotentialFlow:
    """Train the softplus flow with the exact route so that its Hessians are no longer ~ c I."""
    model = build_flow(args, target, train=data)
    route = Route("warm-up", "softplus", model, package_stepper(model, args))
    batches = torch.Generator().manual_seed(args.seed + 1)
    started = time.perf_counter()
    for step in range(1, args.steps_warmup + 1):
        loss = train_step(route, draw_batch(data, args.batch, batches))
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"warm-up diverged at step {step}")
        if step % 50 == 0 or step == args.steps_warmup:
            elapsed = time.perf_counter() - started
            progress = f"{step}/{args.steps_warmup}"
            print(f"warm-up step {progress}: loss {float(loss):.4f} ({elapsed:.0f} s)")
    return model


def trained_model(args: argparse.Namespace) -> ConvexPotentialFlow:
    """The flow of a finished softplus cpflow run (e.g. from experiment=paper_tabular_cpflow):
    a state reached by real training; width and depth follow that run."""

    from icnn_bench import load_run

    config = read_config(args.from_run)
    if config["model"]["name"] != "cpflow" or config["method"]["name"] != "softplus":
        raise SystemExit(f"--from-run needs a softplus cpflow run; {args.from_run} is not one")
    args.width, args.depth = config["model"]["width"], config["model"]["depth"]
    model = load_run(args.from_run)
    model.unpin()  # time training steps, not the pinned evaluation emission
    assert isinstance(model, ConvexPotentialFlow)
    return model


def draw_batch(data: Tensor, size: int, generator: torch.Generator) -> Tensor:
    return data[torch.randint(data.shape[0], (size,), generator=generator)]


@contextlib.contextmanager
def recording_cg_iterations() -> Iterator[list[int]]:
    """Wrap flow.stochastic_log_det; yields the list that collects each call's iterations."""
    original = flow_module.stochastic_log_det
    calls: list[int] = []

    def recorded(*args: Any, **kwargs: Any):
        estimate = original(*args, **kwargs)
        calls.append(estimate.iterations)
        return estimate

    flow_module.stochastic_log_det = recorded
    try:
        yield calls
    finally:
        flow_module.stochastic_log_det = original


def build_routes(
    args: argparse.Namespace, target: Target, warm: ConvexPotentialFlow
) -> list[Route]:
    chunked = f"{EXACT_CHUNKED} (train_chunk={args.train_chunk})"
    specs: list[tuple[str, str, str, int]] = [
        (CG, "softplus", "stochastic", args.train_chunk),
        (chunked, "softplus", "exact", args.train_chunk),
        (EXACT_UNCHUNKED, "softplus", "exact", args.batch),
    ]
    if not args.skip_naive:
        specs.append((NAIVE, "softplus", "exact", args.batch))
    for method in filter(None, (m.strip() for m in args.methods.split(","))):
        specs.append((METHOD_ROW.format(method), method, "exact", args.train_chunk))
    routes = []
    for name, method, log_det, chunk in specs:
        model = build_flow(args, target, method, log_det, chunk)
        note = transfer_state(warm, model)
        if name == NAIVE:  # the same stepper; only the loss is the generic reference's
            model.loss_backward = naive_loss_backward(model)
        if log_det == "exact" and name not in (NAIVE, EXACT_UNCHUNKED) and args.batch <= chunk:
            note = "; ".join(filter(None, [note, "batch <= train_chunk: runs unchunked"]))
        routes.append(Route(name, method, model, package_stepper(model, args), note))
    return routes


def time_routes(routes: list[Route], data: Tensor, args: argparse.Namespace) -> None:
    """Untimed steps per route, then round-robin timed steps, the order rotating every round;
    each round feeds every route the same batch."""
    batches = torch.Generator().manual_seed(args.seed + 2)
    with recording_cg_iterations() as calls:
        for _ in range(args.untimed):
            batch = draw_batch(data, args.batch, batches)
            for route in routes:
                train_step(route, batch)
        for repeat in range(args.repeats):
            batch = draw_batch(data, args.batch, batches)
            shift = repeat % len(routes)
            for route in routes[shift:] + routes[:shift]:
                calls.clear()
                started = time.perf_counter()
                loss = train_step(route, batch)
                elapsed = time.perf_counter() - started
                route.times_ms.append(1e3 * elapsed)
                route.losses.append(float(loss))
                if calls:
                    route.cg_iterations.append(statistics.fmean(calls))
            print(f"round {repeat + 1}/{args.repeats} done")


# --- report --------------------------------------------------------------------------------


def summary_rows(routes: list[Route]) -> list[dict[str, Any]]:
    cg_median = quartiles(routes[0].times_ms)[1]
    rows = []
    for route in routes:
        low, median, high = quartiles(route.times_ms)
        rows.append(
            {
                "route": route.name,
                "method": route.method,
                "median_ms": median,
                "iqr_ms": high - low,
                "ratio_to_cg": median / cg_median,
                "cg_iterations": (
                    statistics.fmean(route.cg_iterations) if route.cg_iterations else None
                ),
                "note": route.note,
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| route | method | median ms/step | IQR ms | × CG step | mean CG iterations | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        iters = "" if row["cg_iterations"] is None else f"{row['cg_iterations']:.1f}"
        lines.append(
            f"| {row['route']} | {row['method']} | {row['median_ms']:.1f} | "
            f"{row['iqr_ms']:.1f} | {row['ratio_to_cg']:.2f} | {iters} | {row['note']} |"
        )
    return "\n".join(lines)


def target_line(rows: list[dict[str, Any]]) -> str:
    default = rows[1]  # the default exact route: structured, chunked
    met = default["ratio_to_cg"] <= TARGET_RATIO
    exact = [r for r in rows[1:] if r["method"] == "softplus"]
    best = min(exact, key=lambda r: r["ratio_to_cg"])
    return (
        f"Issue target: exact step within {TARGET_RATIO:g}x of the CG estimator's step. "
        f"**{'Met' if met else 'Not met'}** in this run: the default exact route "
        f"({default['route']}) takes {default['ratio_to_cg']:.2f}x the CG step "
        f"(fastest exact route: {best['route']}, {best['ratio_to_cg']:.2f}x)."
    )


def warm_up_lines(warm: WarmUp, rows: list[dict[str, Any]]) -> list[str]:
    median, largest = warm.conditioning
    lines = [
        f"- Warm-up state: Hessian condition number on a batch, median {median:.4g}, "
        f"largest {largest:.4g}"
    ]
    if warm.check is not None:
        exact, naive = warm.check
        lines.append(
            f"- Check on the warm-up state: model's exact loss {exact:.6f}, naive torch.func "
            f"loss {naive:.6f} (relative difference {abs(naive - exact) / abs(exact):.1e})"
        )
    iterations = rows[0]["cg_iterations"]
    if iterations is not None and iterations <= NEAR_IDENTITY_ITERS:
        lines.append(
            f"- **Caution:** CG used {iterations:.1f} iterations on average: the Hessians are "
            "still close to a multiple of the identity, which flatters the CG route. A longer "
            "--steps-warmup gives a more realistic state."
        )
    return lines


def step_description(args: argparse.Namespace) -> str:
    clip = f"gradient-norm clipping at {args.grad_clip:g}, " if args.grad_clip > 0 else ""
    return f"zero_grad, forward, backward, {clip}fused Adam step"


def _origin(args: argparse.Namespace, warm: WarmUp) -> str:
    if args.from_run is not None:
        return f"The softplus flow trained by the run {args.from_run} was loaded"
    return (
        f"A softplus flow was first trained for {args.steps_warmup} steps with the exact "
        f"route ({warm.seconds:.0f} s)"
    )


def report(
    args: argparse.Namespace, routes: list[Route], warm: WarmUp, loads: tuple[str, str]
) -> str:
    rows = summary_rows(routes)
    cg_cap = min(args.cg_iters, 2 * args.dim)
    lines = [
        "# CP-Flow training step: log-determinant routes",
        "",
        f"Wall-clock time of one training step ({step_description(args)}) of a one-block "
        "CP-Flow, per log-det route, measured in one process on one thread. Setting: target "
        f"{args.target}, d = {args.dim}, ICNN width {args.width}, {args.depth} hidden layers, "
        f"batch {args.batch}, Adam lr {args.lr:g}. {_origin(args, warm)} and its state "
        f"copied into every route's model; each route then took {args.untimed} untimed steps "
        f"and {args.repeats} timed ones, round-robin (same batch for every route within a "
        "round, order rotating). The CG route is CP-Flow's estimator (Rademacher probe, "
        "Hutchinson gradient by conjugate gradients, Lanczos value; at most "
        f"{cg_cap} iterations, rtol {args.cg_rtol:g}); its iteration count is that of the "
        "slowest row of the batch. × CG step = median / CG median.",
        "",
        f"- Machine: {machine_description()}",
        f"- Load average (1, 5, 15 min) at start: {loads[0]}; at end: {loads[1]}",
        f"- Command: `{command_line()}`",
        *warm_up_lines(warm, rows),
        "",
        markdown_table(rows),
        "",
        target_line(rows),
        "",
    ]
    return "\n".join(lines)


def raw_frame(routes: list[Route]) -> pd.DataFrame:
    records = []
    for route in routes:
        for repeat, (ms, loss) in enumerate(zip(route.times_ms, route.losses, strict=True)):
            iters = route.cg_iterations[repeat] if route.cg_iterations else None
            records.append(
                {
                    "route": route.name,
                    "method": route.method,
                    "repeat": repeat,
                    "ms": ms,
                    "loss": loss,
                    "cg_iterations": iters,
                }
            )
    return pd.DataFrame(records)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)  # before any torch work
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    args = parse_args(argv)
    load_start = load_average()
    target = build_target(args.target, {"dim": args.dim})
    data = target.sample(args.n_data, args.seed).float()

    started = time.perf_counter()
    model = trained_model(args) if args.from_run else warm_up_model(args, target, data)
    seconds = time.perf_counter() - started
    batch = draw_batch(data, args.batch, torch.Generator().manual_seed(args.seed + 3))
    check = None if args.skip_naive else check_naive_agrees(model, batch)
    warm = WarmUp(seconds, hessian_conditioning(model, batch), check)

    routes = build_routes(args, target, model)
    time_routes(routes, data, args)

    text = report(args, routes, warm, (load_start, load_average()))
    io.write_text(args.out, text)
    io.write_csv(args.out.with_suffix(".csv"), raw_frame(routes))
    print(text)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
