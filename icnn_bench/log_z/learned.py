"""The paper authors' training log Z: self-normalised importance sampling from a normalizing
flow sampler trained alongside the EBM by reverse KL (luqigroup/lift's 1-D regime).

Each training step draws `train_samples` from the sampler q and returns
log Z_hat = logmeanexp(-E(y) - log q(y)), with gradients through E (y and q are detached).
Then the sampler adapts to that step's energy (the weights before the EBM's update, as in
the authors' code): `min_steps` to `max_steps` reverse-KL steps, stopping once its KL
estimate on `kl_samples` fresh draws, mean(log q + E) + log Z_hat, is below `kl_threshold`.
Before the first EBM step, `warmup_steps` sampler steps fit it to the initial energy.

Evaluation stays exact where it can: with a quadrature reference (d <= 2) the evaluation
log Z is quadrature's; elsewhere it is importance sampling from the sampler with
`eval_samples` draws and its standard error (biased low, an estimate).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.devices import host_generator, to_device
from icnn_bench.errors import ConfigError
from icnn_bench.log_z.base import (
    EnergyFn,
    LogZEstimate,
    LogZEstimator,
    NonFiniteWeights,
    snis_estimate,
)

FLOWS = ("nsf", "maf")


class LearnedSamplerLogZ(LogZEstimator):
    has_diagnostics = True

    def __init__(
        self,
        dim: int,
        reference: LogZEstimator | None = None,
        train_samples: int = 1024,
        eval_samples: int = 8192,
        kl_samples: int = 256,
        kl_threshold: float = 0.1,
        min_steps: int = 1,
        max_steps: int = 30,
        warmup_steps: int = 500,
        lr: float = 5e-3,
        grad_clip: float = 1.0,
        flow: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for key, n in (
            ("train_samples", train_samples),
            ("eval_samples", eval_samples),
            ("kl_samples", kl_samples),
        ):
            checks.integer(f"log_z.{key}", n, minimum=2)
        checks.integer("log_z.min_steps", min_steps, minimum=0)
        checks.integer("log_z.max_steps", max_steps, minimum=max(1, min_steps))
        checks.integer("log_z.warmup_steps", warmup_steps, minimum=0)
        checks.number("log_z.kl_threshold", kl_threshold, minimum=-math.inf)
        checks.number("log_z.lr", lr)
        checks.number("log_z.grad_clip", grad_clip)
        self.reference = reference
        self.train_samples, self.eval_samples, self.kl_samples = (
            train_samples,
            eval_samples,
            kl_samples,
        )
        self.kl_threshold, self.min_steps, self.max_steps = kl_threshold, min_steps, max_steps
        self.warmup_steps, self.lr, self.grad_clip = warmup_steps, lr, grad_clip
        self.sampler = _flow(dim, **(flow or {}))
        self._optimizer: torch.optim.Optimizer | None = None
        self._seed = seed
        self._stream: torch.Generator | None = None  # the sampler's draws, made on first use
        self._adapting = True  # off while a diagnostic probe evaluates the loss
        self.counts = _Counts()

    # -- what the estimator declares ------------------------------------------------------

    @property
    def estimate_kind(self) -> str:  # type: ignore[override]
        return "quadrature" if self.reference is not None else "importance"

    def evaluation_grid(self) -> tuple[Tensor, float] | None:
        return self.reference.evaluation_grid() if self.reference is not None else None

    # -- training ------------------------------------------------------------------------

    def forward(self, energy_fn: EnergyFn, training: bool) -> Tensor:
        if not training:
            if self.reference is not None:
                return self.reference(energy_fn, training=False)
            log_w = self._log_weights(energy_fn, self.eval_samples, self._eval_stream())
            return torch.logsumexp(log_w, 0) - math.log(log_w.numel())
        log_w = self._log_weights(energy_fn, self.train_samples, self._draws())
        return torch.logsumexp(log_w, 0) - math.log(log_w.numel())

    def adapt(self, energy_fn: EnergyFn, log_z: Tensor) -> None:
        """The sampler's steps after an EBM step's loss (energy_fn: its weights, detached)."""
        if not self._adapting:
            return
        log_z_hat = float(log_z)
        steps, kl = 0, math.inf
        while steps < self.max_steps and (steps < self.min_steps or kl >= self.kl_threshold):
            self._sampler_step(energy_fn)
            steps += 1
            kl = self._kl(energy_fn, log_z_hat)
        # a true KL is >= 0: an estimate below -threshold means this step's log Z_hat was
        # too low by at least that (the EBM has mass its sampler had not found)
        behind = kl < -abs(self.kl_threshold)
        self.counts.record(steps, kl, converged=kl < self.kl_threshold, behind=behind)

    def warm_up(self, energy_fns: Callable[[], EnergyFn]) -> None:
        """Fit the sampler to the initial energy before the first EBM step (each step to the
        weights `energy_fns()` emits: the lift's change with the batch)."""
        for _ in range(self.warmup_steps):
            self._sampler_step(energy_fns())

    def _sampler_step(self, energy_fn: EnergyFn) -> None:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.sampler.parameters(), lr=self.lr)
        params = list(self.sampler.parameters())
        y, log_q = self.sampler.rsample_and_log_prob(self.train_samples, self._draws())
        loss = (log_q + energy_fn(y)).mean()
        if not bool(torch.isfinite(loss)):
            return  # as the authors: a non-finite sampler loss skips the step
        grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def _kl(self, energy_fn: EnergyFn, log_z_hat: float) -> float:
        y, log_q = self.sampler.rsample_and_log_prob(self.kl_samples, self._draws())
        return float((log_q + energy_fn(y)).mean()) + log_z_hat

    # -- evaluation and diagnostics ------------------------------------------------------

    @torch.no_grad()
    def estimate(self, energy_fn: EnergyFn) -> LogZEstimate:
        if self.reference is not None:
            return self.reference.estimate(energy_fn)
        log_w = self._log_weights(energy_fn, self.eval_samples, self._eval_stream())
        return snis_estimate(log_w)

    @torch.no_grad()
    def diagnostics(self, energy_fn: EnergyFn) -> dict[str, float]:
        """Per evaluation: the training estimator's error against exact quadrature (where
        there is a reference), the sampler's last KL estimate, its mean steps per EBM step
        since the last evaluation, and how many of those EBM steps ended unconverged or with
        a KL estimate below -threshold (behind)."""
        row = self.counts.since_last()
        if self.reference is not None:
            generator = host_generator(self._seed + 7_000_003 + self.counts.evaluations)
            log_w = self._log_weights(energy_fn, self.train_samples, generator)
            estimate = float(torch.logsumexp(log_w.double(), 0) - math.log(log_w.numel()))
            row["log_z_err"] = estimate - float(self.reference(energy_fn, training=False))
        return row

    def summary(self) -> dict[str, Any]:
        """For result.json: the sampler's totals, and a note if it fell short."""
        out: dict[str, Any] = {
            "log_z_train": "learned_sampler",
            "sampler_steps_total": self.counts.total_steps,
            "sampler_unconverged_steps": self.counts.total_unconverged,
            "sampler_behind_steps": self.counts.total_behind,
        }
        notes = []
        if self.counts.total_unconverged:
            notes.append(
                f"the sampler ended {self.counts.total_unconverged} of {self.counts.total_ebm} "
                f"EBM steps above its KL threshold {self.kl_threshold} after "
                f"{self.max_steps} steps"
            )
        if self.counts.total_behind:
            notes.append(
                f"in {self.counts.total_behind} of {self.counts.total_ebm} EBM steps its KL "
                f"estimate ended below -{abs(self.kl_threshold)}: the training log Z was "
                "underestimated there (the EBM ahead of its sampler), so those steps' losses "
                "are not trustworthy"
            )
        if notes:
            out["sampler_note"] = "; ".join(notes)
        return out

    # -- state ---------------------------------------------------------------------------

    def side_state(self) -> dict[str, Any]:
        return {
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "stream_started": self._stream is not None,
            "counts": self.counts.state(),
        }

    def load_side_state(self, state: dict[str, Any]) -> None:
        if state["optimizer"] is None:
            self._optimizer = None
        else:
            self._optimizer = torch.optim.Adam(self.sampler.parameters(), lr=self.lr)
            self._optimizer.load_state_dict(state["optimizer"])
        if not state["stream_started"]:
            self._stream = None
        self.counts.load(state["counts"])

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self._adapting = False
        try:
            yield
        finally:
            self._adapting = True

    # -- draws ---------------------------------------------------------------------------

    def _log_weights(self, energy_fn: EnergyFn, n: int, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            y, log_q = self.sampler.rsample_and_log_prob(n, generator)
        log_w = -energy_fn(y) - log_q
        if not bool(torch.isfinite(log_w).all()):
            raise NonFiniteWeights(
                "importance weights of the learned sampler are not finite (the energy or the "
                "sampler's density overflowed); try a smaller trainer.lr or log_z.lr"
            )
        return log_w

    def _draws(self) -> torch.Generator:
        if self._stream is None:
            self._stream = host_generator(self._seed)
        return self._stream

    def _eval_stream(self) -> torch.Generator:
        # the same draws at every evaluation, so log_prob is one fixed function between calls
        return host_generator(self._seed + 1_000_003)


class _Counts:
    """Sampler steps per EBM step, since the last evaluation and in all."""

    def __init__(self) -> None:
        self.steps = self.ebm = self.unconverged = self.behind = 0
        self.total_steps = self.total_ebm = self.total_unconverged = self.total_behind = 0
        self.evaluations = 0
        self.last_kl = math.nan

    def record(self, steps: int, kl: float, converged: bool, behind: bool = False) -> None:
        self.steps += steps
        self.ebm += 1
        self.unconverged += not converged
        self.behind += behind
        self.total_steps += steps
        self.total_ebm += 1
        self.total_unconverged += not converged
        self.total_behind += behind
        self.last_kl = kl

    def since_last(self) -> dict[str, float]:
        row = {
            "sampler_kl": self.last_kl,
            "sampler_steps": self.steps / self.ebm if self.ebm else math.nan,
            "sampler_unconverged": float(self.unconverged),
            "sampler_behind": float(self.behind),
        }
        self.steps = self.ebm = self.unconverged = self.behind = 0
        self.evaluations += 1
        return row

    def state(self) -> dict[str, Any]:
        return dict(vars(self))

    def load(self, state: dict[str, Any]) -> None:
        vars(self).update(state)


class _Sampler(nn.Module):
    """x = loc + exp(log_scale) * s, s from a zuko flow (inverted, so drawing is one pass).
    The learned affine lets a spline flow, whose splines live on [-5, 5], reach any scale;
    it starts at the identity, as the authors' sampler starts near N(0, I)."""

    def __init__(self, dim: int, kind: str, transforms: int, hidden, bins: int) -> None:
        super().__init__()
        import zuko

        if kind == "nsf":
            forward = zuko.flows.NSF(
                features=dim, transforms=transforms, hidden_features=tuple(hidden), bins=bins
            )
        else:
            forward = zuko.flows.MAF(
                features=dim, transforms=transforms, hidden_features=tuple(hidden)
            )
        self.flow = zuko.flows.Flow(forward.transform.inv, forward.base)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def rsample_and_log_prob(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n draws and their log-density; the base noise comes from `generator` (zuko would
        draw it from the global stream, whose reseeding costs more than the draw)."""
        dist = self.flow()
        z = to_device(torch.randn(n, self.loc.numel(), generator=generator), self.loc.device)
        s, ladj = dist.transform.inv.call_and_ladj(z)
        if ladj.dim() > 1:
            ladj = ladj.sum(-1)
        log_q = dist.base.log_prob(z) - ladj
        return self.loc + s * self.log_scale.exp(), log_q - self.log_scale.sum()


def _flow(
    dim: int, kind: str = "nsf", transforms: int = 1, hidden=(64, 64), bins: int = 16
) -> _Sampler:
    try:
        import zuko  # noqa: F401
    except ImportError:
        message = "log_z=learned_sampler needs the zuko package: pip install zuko"
        raise ConfigError(message) from None
    checks.choice("log_z.flow.kind", kind, FLOWS)
    checks.integer("log_z.flow.transforms", transforms)
    checks.int_list("log_z.flow.hidden", hidden)
    checks.integer("log_z.flow.bins", bins)
    return _Sampler(dim, kind, transforms, hidden, bins)
