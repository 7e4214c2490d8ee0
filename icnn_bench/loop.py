"""The training loop, written once. A stepper turns batches into one optimizer update, for
one seed (`OneSeed`) or for S seeds stacked into one vmapped model (`StackedSeeds`); the loop
around it (batches, non-finite handling, evaluations, checkpoints) is the same for both.

Each seed keeps its own model, data, batch and probe streams, evaluations and sinks
(`SeedRun`); the stepper owns the optimizer and schedule. In a stacked cell each model's
parameters are views into tensors stacked over seeds, so one vmapped loss and one Adam step
train all of them (Adam is elementwise; clipping is per seed) while every seed still
evaluates, projects and saves as a model of its own.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from icnn_bench.build import TrainerSettings
from icnn_bench.checkpoint import Checkpoints, global_rng_state, set_global_rng_state
from icnn_bench.devices import host_generator, to_device
from icnn_bench.diagnostics import ShoulderDwell, grad_norm, probe_cross_covariance
from icnn_bench.errors import Diverged
from icnn_bench.evaluation import EvaluationPool, validation_metrics
from icnn_bench.models.base import DensityModel
from icnn_bench.sinks.base import Sink
from icnn_bench.targets import Split, Target

# skip_step gives up after this many non-finite steps in a row: the run will not recover
MAX_CONSECUTIVE_SKIPS = 50
STREAM_SEED = 3_000_017  # data.stream: batch k of seed s is drawn with a seed of its own


@dataclass
class LoopOutcome:
    status: str  # ok | diverged
    steps: int
    diverged_step: int | None = None
    error: str | None = None
    dwell: list[dict[str, float]] | None = None  # shoulder-dwell survival rows
    skipped_steps: int = 0  # nan_policy=skip_step: steps whose update was skipped


@dataclass
class LoopState:
    """One seed's progress: what a checkpoint holds besides modules and random streams."""

    losses: Tensor  # the training loss of every step (nan where skipped or not reached)
    dwell: ShoulderDwell
    rows: list[dict[str, float]] = field(default_factory=list)  # metrics.csv so far
    last_logged: int = 0
    constrained_grad: float = math.nan  # at the last evaluation step, before clipping
    skipped: int = 0
    consecutive_skips: int = 0
    drawn: int = 0  # data.stream: batches drawn from the target so far
    stopped: LoopOutcome | None = None  # set when this seed diverged before the others


class SeedRun:
    """One seed's side of training: its batch and probe streams, evaluations, curve, sinks."""

    def __init__(
        self,
        model: DensityModel,
        split: Split,
        settings: TrainerSettings,
        seed: int,
        sinks: list[Sink],
        pool: EvaluationPool | None = None,
        stream: Target | None = None,
    ) -> None:
        self.model, self.split, self.settings, self.seed, self.sinks = (
            model,
            split,
            settings,
            seed,
            sinks,
        )
        self.pools = pool or EvaluationPool(settings, split, None, seed)
        self.stream = stream  # data.stream: draw every batch fresh from this target
        # on the CPU whatever the device: a seed draws the same batches everywhere
        self.batches = host_generator(seed)
        self.probes = host_generator(seed + 7919)  # training's stream untouched
        self.state = LoopState(
            losses=torch.full((settings.steps,), math.nan),
            dwell=ShoulderDwell(settings.eval_every),
        )

    @property
    def live(self) -> bool:
        return self.state.stopped is None

    def next_batch(self) -> Tensor:
        train = self.split.train
        if self.stream is not None:  # a fresh batch, never seen before: its own seed
            self.state.drawn += 1
            seed = STREAM_SEED + 1_000_003 * self.seed + self.state.drawn
            return self.stream.sample(self.settings.batch_size, seed=seed).to(train.device)
        index = torch.randint(train.shape[0], (self.settings.batch_size,), generator=self.batches)
        return train[to_device(index, train.device)]

    def log_eval(self, step: int) -> None:
        state, model, settings = self.state, self.model, self.settings
        last = state.last_logged
        window = state.losses[last:step]
        pool = self.pools.draw(len(state.rows))
        row = {
            "step": step,
            "train_loss": float(window.nanmean()) if step > last else math.nan,
            **validation_metrics(model, self.split, pool, self.pools.target),
            "dead_frac": model.dead_fraction(),
            "grad_norm": state.constrained_grad,
            **model.method_diagnostics(),
            **model.diagnostics(pool),
        }
        if settings.probe_every and step % settings.probe_every == 0:
            row.update(probe_row(model, self.split, settings, self.probes))
        if step > 0:  # the shoulder of the weights trained so far
            state.dwell.observe(model)
        state.rows.append(row)
        _emit(self.sinks, list(range(last + 1, step + 1)), window.tolist(), row)
        state.last_logged = step

    def stop(self, step: int, cause: str) -> None:
        """Diverged at `step`: keep the curve up to the last finite step."""
        if step - 1 > self.state.last_logged:
            with contextlib.suppress(Diverged):
                self.log_eval(step - 1)
        self.state.stopped = LoopOutcome(
            status="diverged",
            steps=step - 1,
            diverged_step=step,
            error=cause,
            skipped_steps=self.state.skipped,
        )

    def outcome(self) -> LoopOutcome:
        if self.state.stopped is not None:
            return self.state.stopped
        return LoopOutcome(
            status="ok",
            steps=self.settings.steps,
            dwell=self.state.dwell.survival(),
            skipped_steps=self.state.skipped,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            # cloned: a stacked model's parameters are views of the whole stack
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "model_rng": self.model.rng_states(),
            "side_state": self.model.side_states(),
            "batches": self.batches.get_state(),
            "probes": self.probes.get_state(),
            "loop": self.state,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.model.set_rng_states(saved["model_rng"])
        self.model.load_side_states(saved["side_state"])
        self.batches.set_state(saved["batches"])
        self.probes.set_state(saved["probes"])
        self.state = saved["loop"]
        _replay(self.sinks, self.state.rows, self.state.losses)


# ---------------------------------------------------------------- steppers


class Stepper(ABC):
    """The optimizer side of a step for the seeds it trains, in SeedRun order."""

    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.StepLR | None

    @abstractmethod
    def backward(self, batches: list[Tensor], record: bool) -> tuple[Tensor, Tensor, list[float]]:
        """Gradients of each seed's batch loss, clipped per seed. Returns the losses and the
        total gradient norms, (S,) each, and (`record`) each seed's gradient norm of its
        constrained parameters before clipping."""

    @abstractmethod
    def update(self, keep: list[bool]) -> None:
        """The optimizer step for the seeds in `keep`, then their projection; the others'
        parameters and optimizer state stay as they were (nan_policy=skip_step)."""

    def expose_gradients(self) -> None:  # noqa: B027 (optional hook)
        """Give every model its own gradients (to name what went non-finite)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Training is over."""

    def schedule_step(self) -> None:
        if self.schedule is not None:
            self.schedule.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])


class OneSeed(Stepper):
    def __init__(self, model: DensityModel, settings: TrainerSettings) -> None:
        self.model = model
        self.trainable = model.trainable_parameters()
        self.optimizer = make_adam(self.trainable, settings)
        self.schedule = make_schedule(self.optimizer, settings)
        self.max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf

    def backward(self, batches: list[Tensor], record: bool) -> tuple[Tensor, Tensor, list[float]]:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.loss_backward(batches[0])
        constrained = [grad_norm(self.model.constrained_parameters())] if record else []
        norm = clip_gradients(self.trainable, self.max_norm)
        return loss.reshape(1), norm.reshape(1), constrained

    def update(self, keep: list[bool]) -> None:
        if not keep[0]:
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.optimizer.step()
        self.model.after_step()


class StackedSeeds(Stepper):
    def __init__(self, models: list[DensityModel], settings: TrainerSettings) -> None:
        self.models = models
        self.stacked = stack_parameters(models)
        self.buffers = {
            f"model.{name}": torch.stack([dict(m.named_buffers())[name] for m in models])
            for name, _ in models[0].named_buffers()
        }
        self.trainable = {n: t for n, t in self.stacked.items() if t.requires_grad}
        first = dict(models[0].named_parameters())
        constrained_ids = {id(p) for p in models[0].constrained_parameters()}
        self.constrained = [n for n in self.trainable if id(first[n]) in constrained_ids]
        self.optimizer = make_adam(list(self.trainable.values()), settings)
        self.schedule = make_schedule(self.optimizer, settings)
        self.max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
        loss_of = _LossOf(models[0])

        def seed_loss(params: dict[str, Tensor], bufs: dict[str, Tensor], batch: Tensor):
            return functional_call(loss_of, (params, bufs), (batch,))

        self.batched_loss = vmap(seed_loss, randomness="error")
        self.prefixed = {f"model.{k}": v for k, v in self.stacked.items()}

    def backward(self, batches: list[Tensor], record: bool) -> tuple[Tensor, Tensor, list[float]]:
        self.optimizer.zero_grad(set_to_none=True)
        # the vmapped call runs the first model's modules: what they record of the call
        # (side state) would hold batched tensors; each model keeps its own instead
        side = self.models[0].side_states()
        losses = self.batched_loss(self.prefixed, self.buffers, torch.stack(batches))
        self.models[0].load_side_states(side)
        losses.sum().backward()
        constrained: list[float] = []
        if record:
            grads = [self.trainable[n].grad for n in self.constrained]
            grads = [g.flatten(1).norm(dim=1) for g in grads if g is not None]
            if grads:
                constrained = torch.stack(grads).norm(dim=0).tolist()
            else:
                constrained = [math.nan] * len(self.models)
        norms = _clip_per_seed(list(self.trainable.values()), self.max_norm)
        return losses.detach(), norms, constrained

    def update(self, keep: list[bool]) -> None:
        held = [i for i, kept in enumerate(keep) if not kept]
        saved = self._slices(held)
        self.optimizer.step()
        self._put_back(saved, held)
        for model, kept in zip(self.models, keep, strict=True):
            if kept:
                model.after_step()

    def _slices(self, seeds: list[int]) -> list[tuple[Tensor, Tensor]]:
        """Copies of the given seeds' slices of every stacked parameter and Adam moment."""
        if not seeds:
            return []
        index = torch.tensor(seeds, device=next(iter(self.trainable.values())).device)
        tensors = list(self.trainable.values())
        for tensor in list(tensors):
            state = self.optimizer.state.get(tensor, {})
            tensors += [v for k, v in state.items() if k != "step" and v.dim() > 0]
        return [(t, t.detach()[index].clone()) for t in tensors]

    def _put_back(self, saved: list[tuple[Tensor, Tensor]], seeds: list[int]) -> None:
        if not seeds:
            return
        with torch.no_grad():
            for tensor, values in saved:
                tensor[torch.tensor(seeds, device=tensor.device)] = values

    def expose_gradients(self) -> None:
        for name, tensor in self.trainable.items():
            if tensor.grad is None:
                continue
            for i, model in enumerate(self.models):
                model.get_parameter(name).grad = tensor.grad[i]

    def close(self) -> None:
        for model in self.models:
            for parameter in model.parameters():
                parameter.grad = None


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


# ---------------------------------------------------------------- the loop


def train_loop(
    runs: list[SeedRun],
    stepper: Stepper,
    settings: TrainerSettings,
    checkpoints: Checkpoints | None = None,
) -> list[LoopOutcome]:
    """Adam on each seed's loss (the batch NLL) with clipping; evaluates every `eval_every`,
    saves a checkpoint every `checkpoint_every` (and after the last step). A seed that goes
    non-finite stops alone (or, with nan_policy=skip_step, skips that update)."""
    start = 1
    saved = checkpoints.resume_from if checkpoints is not None else None
    if saved is not None:
        for run, seed_state in zip(runs, saved["seeds"], strict=True):
            run.restore(seed_state)
        set_global_rng_state(saved["global_rng"])
        stepper.load_state_dict(saved["stepper"])
        start = saved["step"] + 1

    def snapshot(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "seeds": [run.snapshot() for run in runs],
            "global_rng": global_rng_state(),
            "stepper": stepper.state_dict(),
        }

    step = start - 1
    try:
        if saved is None:
            for run in runs:
                run.model.warm_up(run.next_batch)
                run.log_eval(0)
        for step in range(start, settings.steps + 1):
            if not any(run.live for run in runs):
                break
            batches = [run.next_batch() for run in runs]
            evaluating = step % settings.eval_every == 0 or step == settings.steps
            losses, norms, constrained = stepper.backward(batches, record=evaluating)
            host = torch.stack([losses.detach(), norms.detach()]).cpu()  # the step's one sync
            values = host[0]
            finite = (torch.isfinite(host[0]) & torch.isfinite(host[1])).tolist()
            keep = _handle_non_finite(runs, stepper, finite, batches, losses, step, settings)
            if not any(run.live for run in runs):
                break
            if evaluating:
                for run, norm in zip(runs, constrained, strict=True):
                    run.state.constrained_grad = norm
            stepper.update(keep)
            for i, run in enumerate(runs):
                if keep[i]:
                    run.state.losses[step - 1] = values[i]
            stepper.schedule_step()
            if evaluating:
                for run in runs:
                    if run.live:
                        run.log_eval(step)
            if checkpoints is not None and checkpoints.due(step, settings.steps):
                checkpoints.save(snapshot(step))
    except Diverged as error:  # importance sampling, a potential gone non-convex
        for run in runs:
            if run.live:
                run.stop(max(step, 1), str(error))
    finally:
        stepper.close()
    return [run.outcome() for run in runs]


def _handle_non_finite(
    runs: list[SeedRun],
    stepper: Stepper,
    finite: list[bool],
    batches: list[Tensor],
    losses: Tensor,
    step: int,
    settings: TrainerSettings,
) -> list[bool]:
    """Which live seeds update this step; a non-finite one is stopped (nan_policy=stop, its
    parameters non-finite, or 50 skips in a row) or skipped and counted."""
    keep = [run.live and ok for run, ok in zip(runs, finite, strict=True)]
    bad = [i for i, run in enumerate(runs) if run.live and not finite[i]]
    if bad:
        stepper.expose_gradients()
    for i, run in enumerate(runs):
        if run.live and finite[i]:
            run.state.consecutive_skips = 0
    for i in bad:
        run = runs[i]
        cause = non_finite_cause(run.model, batches[i], losses[i])
        run.state.consecutive_skips += 1
        count = run.state.consecutive_skips
        if (
            settings.nan_policy == "stop"
            or cause.startswith("non-finite parameters")
            or count >= MAX_CONSECUTIVE_SKIPS
        ):
            run.stop(step, cause + (f" ({count} steps in a row)" if count > 1 else ""))
        else:
            run.state.skipped += 1  # nan_policy=skip_step: no update from this batch
    return keep


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> Tensor:
    """torch's clip_grad_norm_, minus its rescaling pass when nothing needs clipping (it
    multiplies by 1.0): the lift's step is bound by passes over its readout gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if math.isfinite(max_norm):
        coefficient = max_norm / (total + 1e-6)
        if total.device.type != "cpu":  # no host sync on a GPU: scale by min(1, c) always
            torch._foreach_mul_(grads, coefficient.clamp(max=1.0))
        elif bool(coefficient < 1.0):  # on a CPU the check is free and saves a pass
            torch._foreach_mul_(grads, coefficient)
    return total


def _emit(sinks: list[Sink], steps: list[int], losses: list[float], row: dict) -> None:
    for sink in sinks:
        if steps:
            sink.log_train_losses(steps, losses)
        sink.log_eval(row)


def _replay(sinks: list[Sink], rows: list[dict], losses: Tensor) -> None:
    """Give the sinks of a resumed run the history logged before its checkpoint."""
    previous = 0
    for row in rows:
        step = int(row["step"])
        _emit(sinks, list(range(previous + 1, step + 1)), losses[previous:step].tolist(), row)
        previous = step


@torch.no_grad()
def non_finite_cause(model: DensityModel, batch: Tensor, loss: Tensor) -> str:
    """Name what went non-finite first: parameters, emitted weights, the loss, or gradients."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            return f"non-finite parameters ({name})"
    for method in model.constraint_methods():
        emitted = method.emit(batch)
        bad = [name for name, value in emitted.items() if not bool(torch.isfinite(value).all())]
        if bad:
            return f"non-finite emitted weights ({model.method_name}: {', '.join(bad)})"
    if not bool(torch.isfinite(loss)):
        return "non-finite loss"
    bad = [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all())
    ]
    return f"non-finite gradient ({', '.join(bad[:3])})"


def probe_row(
    model: DensityModel, split: Split, settings: TrainerSettings, generator: torch.Generator
) -> dict[str, float]:
    """The cross-covariance probe's columns for metrics.csv (sigma_jac2 = its trace)."""
    probe = probe_cross_covariance(
        model,
        split.train,
        settings.batch_size,
        settings.probe_batches,
        generator,
        settings.probe_permutations,
    )
    return {
        "sigma_jac2": probe.trace,
        "crosscov_fro": probe.frobenius,
        "crosscov_asym": probe.asymmetry,
        "crosscov_p": math.nan if probe.p_value is None else probe.p_value,
    }


def make_schedule(
    optimizer: torch.optim.Optimizer, settings: TrainerSettings
) -> torch.optim.lr_scheduler.StepLR | None:
    if not settings.lr_halve_every:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_halve_every, gamma=0.5)


def make_adam(params: list[nn.Parameter], settings: TrainerSettings) -> torch.optim.Adam:
    """Fused Adam where this torch build has it: the lift's step is bound by optimizer traffic."""
    try:
        return torch.optim.Adam(
            params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
