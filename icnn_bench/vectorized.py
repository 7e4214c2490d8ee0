"""Several seeds of one (target, model, method) cell: one run folder per seed, trained one
after another or, with trainer.vectorize, as one batched computation.

Vectorised, each seed keeps its own data, model, batch stream, evaluations and run folder;
its parameters become views into tensors stacked over seeds, so one vmapped loss
(torch.func) and one Adam step train all of them (Adam is elementwise; clipping is per seed)
while each seed still evaluates, projects and saves as a model of its own.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from icnn_bench import checks, io, train
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.models.base import DensityModel
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.objectives.quadrature import QuadratureLogZ
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.files import FileSink

SinkFactory = Callable[[dict[str, Any], Path], list[Sink]]


def seed_config(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The config of one seed of a cell; the data follow the seed unless pinned apart."""
    one = copy.deepcopy(config)
    one.pop("seeds", None)
    if one.get("data", {}).get("seed", one.get("seed")) == one.get("seed"):
        one.setdefault("data", {})["seed"] = seed
    one["seed"] = seed
    return one


def run_seeds(
    config: dict[str, Any], job_dir: Path, make_sinks: SinkFactory | None = None
) -> list[dict[str, Any]]:
    """Run every seed of `config["seeds"]` into `job_dir/seed<k>`; returns their results."""
    seeds = config.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(checks.is_int(s) for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of integers")
    make_sinks = make_sinks or (lambda cfg, run_dir: [])
    configs = {seed: seed_config(config, seed) for seed in seeds}
    dirs = {seed: Path(job_dir) / f"seed{seed}" for seed in seeds}
    if not use_vectorized(config):
        return [train.run(configs[s], dirs[s], make_sinks(configs[s], dirs[s])) for s in seeds]
    results: dict[int, dict[str, Any]] = {}
    pending = []
    for seed in seeds:
        finished = train.finished_result(dirs[seed], configs[seed])
        if finished is not None:
            sinks = make_sinks(configs[seed], dirs[seed])
            for sink in sinks:
                sink.already_finished(finished)
            results[seed] = finished
        else:
            pending.append(seed)
    if pending:
        explicit = (config.get("trainer") or {}).get("vectorize") is True
        cell = {s: (configs[s], dirs[s], make_sinks(configs[s], dirs[s])) for s in pending}
        try:
            results.update(_run_vectorized(cell, explicit))
        except _NotBatchable:  # vectorize=auto on a cell it does not apply to
            for s in pending:
                results[s] = train.run(configs[s], dirs[s], cell[s][2])
    return [results[s] for s in seeds]


class _NotBatchable(Exception):
    pass


# On a CPU the lift's batched step is slower than its seeds one after another: its readout
# (~3.3M parameters per seed at width 128) is memory-bound, and S seeds' worth no longer fits
# the cache (results/bench.md). pgd and softplus gain from batching.
CPU_SEQUENTIAL_METHODS = ("lift", "lift_noslack", "lift_nocond", "lift_nostoch")


def use_vectorized(config: dict[str, Any]) -> bool:
    """trainer.vectorize: true, false, or auto: batched on a GPU, and on a CPU wherever it
    measured faster (not the lift)."""
    choice = (config.get("trainer") or {}).get("vectorize", "auto")
    if choice not in (True, False, "auto"):
        raise ConfigError(f"trainer.vectorize={choice!r}; choose one of: true, false, auto")
    if choice != "auto":
        return choice
    device = config.get("device", "auto")
    on_gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if on_gpu:
        return True
    method = (config.get("method") or {}).get("name")
    model = (config.get("model") or {}).get("name", "icnn")
    log_z = ((config.get("model") or {}).get("log_z") or {}).get("estimator", "auto")
    return (
        model == "icnn"
        and log_z in ("auto", "quadrature")
        and method not in (CPU_SEQUENTIAL_METHODS)
    )


def unsupported(config: dict[str, Any], model: DensityModel) -> str | None:
    """Why this cell cannot be trained vectorised, or None."""
    settings = config.get("trainer") or {}
    if not isinstance(model, EnergyModel) or not isinstance(model.log_z_estimator, QuadratureLogZ):
        return "trainer.vectorize=true supports ICNN energy models with quadrature log Z (d <= 2)"
    if settings.get("probe_every"):
        return "trainer.vectorize=true does not run the probe; set trainer.probe_every=null"
    if settings.get("nan_policy", "stop") != "stop":
        return "trainer.vectorize=true needs trainer.nan_policy=stop"
    if getattr(model.source, "stochastic", True) is False:
        return "trainer.vectorize=true cannot pool each seed's whole split (method.stochastic)"
    return None


def _run_vectorized(
    cell: dict[int, tuple[dict[str, Any], Path, list[Sink]]], explicit: bool = True
) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    jobs: dict[int, train.Prepared] = {}
    sinks = {seed: [FileSink(run_dir), *extra] for seed, (_, run_dir, extra) in cell.items()}
    started = time.perf_counter()
    for seed, (config, run_dir, _) in cell.items():
        try:
            jobs[seed] = train.prepare(config, run_dir)
            problem = unsupported(config, jobs[seed].model)
            if problem is not None and not explicit:
                raise _NotBatchable(problem)
            if problem is not None:
                raise ConfigError(problem)
        except (ConfigError, DataError) as error:
            jobs.pop(seed, None)
            train.write_config(run_dir, config)
            results[seed] = _failed(config, sinks[seed], str(error), started)
            continue
        train.write_config(run_dir, config)
    if not jobs:
        return results
    for seed, job in jobs.items():
        for sink in sinks[seed]:
            sink.start(train.result_header(cell[seed][0]), job.settings.steps)
    train_started = time.perf_counter()
    try:
        outcomes = train_vectorized(jobs, {s: sinks[s] for s in jobs})
    except Exception as error:  # one batched computation: every seed of it failed
        for seed in jobs:
            config, run_dir, _ = cell[seed]
            io.write_text(run_dir / train.ERROR_LOG, traceback.format_exc())
            message = f"{type(error).__name__}: {error} (traceback in {train.ERROR_LOG})"
            results[seed] = _failed(config, sinks[seed], message, started)
        return results
    train_s = time.perf_counter() - train_started
    for seed, job in jobs.items():
        config, run_dir, _ = cell[seed]
        result = {**train.result_header(config), "vectorized_seeds": len(jobs)}
        try:
            result.update(train.conclude(job, outcomes[seed], train_s, run_dir))
        except Exception as error:
            io.write_text(run_dir / train.ERROR_LOG, traceback.format_exc())
            result.update(error=f"{type(error).__name__}: {error} (traceback in error.txt)")
        train.finish(result, sinks[seed], started)
        results[seed] = result
    return results


def train_vectorized(
    jobs: dict[int, train.Prepared], sinks: dict[int, list[Sink]]
) -> dict[int, train.LoopOutcome]:
    """Train the seeds of one cell together; returns each seed's outcome."""
    seeds = list(jobs)
    settings = jobs[seeds[0]].settings
    models = [jobs[s].model for s in seeds]
    runs = [train.SeedRun(jobs[s].model, jobs[s].split, settings, s, sinks[s]) for s in seeds]
    stacked = stack_parameters(models)
    buffers = {
        name: torch.stack([dict(m.named_buffers())[name] for m in models])
        for name, _ in models[0].named_buffers()
    }
    trainable = {name: tensor for name, tensor in stacked.items() if tensor.requires_grad}
    optimizer = train.make_adam(list(trainable.values()), settings)
    schedule = train.make_schedule(optimizer, settings)
    max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
    loss_of = _LossOf(models[0])

    def seed_loss(params: dict[str, Tensor], bufs: dict[str, Tensor], batch: Tensor) -> Tensor:
        return functional_call(loss_of, (params, bufs), (batch,))

    batched_loss = vmap(seed_loss, randomness="error")
    prefixed = {f"model.{k}": v for k, v in stacked.items()}
    prefixed_buffers = {f"model.{k}": v for k, v in buffers.items()}
    all_losses = torch.full((settings.steps, len(seeds)), math.nan)
    live = list(range(len(seeds)))
    outcomes: dict[int, train.LoopOutcome] = {}

    def log_eval(i: int, step: int) -> None:
        loop = runs[i].loop
        last = loop["last_logged"]
        loop["losses"][last:step] = all_losses[last:step, i]
        runs[i].log_eval(step)

    for i in live:
        runs[i].log_eval(0)
    for step in range(1, settings.steps + 1):
        batches = torch.stack([runs[i].next_batch() for i in range(len(seeds))])
        optimizer.zero_grad(set_to_none=True)
        losses = batched_loss(prefixed, prefixed_buffers, batches)
        losses.sum().backward()
        norms = _clip_per_seed(list(trainable.values()), max_norm)
        finite = torch.isfinite(losses.detach()) & torch.isfinite(norms)
        evaluating = step % settings.eval_every == 0 or step == settings.steps
        if evaluating or not bool(finite[live].all()):
            _share_grads(models, trainable)
        for i in [i for i in live if not bool(finite[i])]:
            cause = train.non_finite_cause(models[i], batches[i], losses[i].detach())
            outcomes[seeds[i]] = runs[i].diverged(step, cause)
            live.remove(i)
        if not live:
            break
        if evaluating:
            for i in live:
                runs[i].loop["constrained_grad"] = train.grad_norm(
                    models[i].constrained_parameters()
                )
        optimizer.step()
        for i in live:
            models[i].after_step()
        all_losses[step - 1] = losses.detach()
        if schedule is not None:
            schedule.step()
        if evaluating:
            for i in live:
                log_eval(i, step)
    for i in live:
        outcomes[seeds[i]] = runs[i].finished()
    _unshare_grads(models)
    return outcomes


class _LossOf(nn.Module):
    """forward = the model's training loss, so that functional_call can reach it."""

    def __init__(self, model: DensityModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Tensor) -> Tensor:
        return self.model.loss(batch)


def stack_parameters(models: list[DensityModel]) -> dict[str, Tensor]:
    """Stack each parameter over the models and make every model's parameter a view of its
    slice: an update of the stack (optimizer) or of a model (projection) is seen by both."""
    stacked = {}
    for name, first in models[0].named_parameters():
        tensor = torch.stack([m.get_parameter(name).detach() for m in models])
        tensor.requires_grad_(first.requires_grad)
        stacked[name] = tensor
        path, _, attr = name.rpartition(".")
        for i, model in enumerate(models):
            module = model.get_submodule(path)
            module._parameters[attr] = nn.Parameter(
                tensor.detach()[i], requires_grad=first.requires_grad
            )
    return stacked


def _clip_per_seed(params: list[Tensor], max_norm: float) -> Tensor:
    """clip_grad_norm_ for each seed's slice of the stacked gradients; returns the norms."""
    grads = [p.grad for p in params if p.grad is not None]
    per_tensor = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # (tensors, seeds)
    norms = per_tensor.norm(dim=0)
    if math.isfinite(max_norm):
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(scale.view(-1, *([1] * (grad.dim() - 1))))
    return norms


def _share_grads(models: list[DensityModel], trainable: dict[str, Tensor]) -> None:
    """Give each model's parameters their slice of the stacked gradients (diagnostics)."""
    for name, tensor in trainable.items():
        if tensor.grad is None:
            continue
        for i, model in enumerate(models):
            model.get_parameter(name).grad = tensor.grad[i]


def _unshare_grads(models: list[DensityModel]) -> None:
    for model in models:
        for parameter in model.parameters():
            parameter.grad = None


def _failed(
    config: dict[str, Any], sinks: list[Sink], error: str, started: float
) -> dict[str, Any]:
    result = {**train.result_header(config), "error": error}
    train.finish(result, sinks, started)
    return result
