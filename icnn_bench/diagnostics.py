"""Diagnostics logged on the evaluation cadence: gradient norms (the dead fraction lives on the
weight method) and the lift's cross-covariance probe.

The probe (the paper's sigma_Jac^2): at a fixed iterate, K probe batches; for each, the emitted
pre-positivity iterate theta~ of the constrained entries and the loss gradient on their slack b.
Centred over the probes, C = sum_k (theta_k - mean)(g_k - mean)^T / (K - 1); we report tr C,
||C||_F and ||C - C^T||_F / ||C||_F without forming the P x P matrix (K x K Gram matrices).
Without batch conditioning theta~ does not vary over probes, so tr C is zero by measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from icnn_bench.models.base import DensityModel


def grad_norm(parameters: list[nn.Parameter]) -> float:
    """Euclidean norm of the gradients of `parameters` (nan when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return math.nan
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


@dataclass(frozen=True)
class CrossCovariance:
    trace: float  # sigma_Jac^2
    frobenius: float
    asymmetry: float  # ||C - C^T||_F / ||C||_F (0 when C = 0)
    p_value: float | None  # permutation test of the probe pairing (None: not run)
    probes: int


def cross_covariance(
    theta: Tensor, grad: Tensor, permutations: int = 0, generator: torch.Generator | None = None
) -> CrossCovariance:
    """Statistics of the (K-1)-normalised cross-covariance of two (K, P) probe sequences."""
    if theta is grad or (theta.shape == grad.shape and torch.equal(theta, grad)):
        raise ValueError(
            "cross_covariance got the same sequence in both slots; it needs the emitted "
            "iterates and the slack gradients, two different sequences"
        )
    if theta.shape != grad.shape or theta.dim() != 2 or theta.shape[0] < 2:
        raise ValueError(f"need two (K, P) sequences with K >= 2; got {theta.shape}, {grad.shape}")
    k = theta.shape[0]
    a = (theta - theta.mean(0)).double()
    b = (grad - grad.mean(0)).double()
    trace = float((a * b).sum() / (k - 1))
    frob_sq = float(((a @ a.T) * (b @ b.T)).sum()) / (k - 1) ** 2
    mixed = b @ a.T
    trace_cc = float((mixed * mixed.T).sum()) / (k - 1) ** 2
    frobenius = math.sqrt(max(frob_sq, 0.0))
    asymmetry = math.sqrt(max(2 * frob_sq - 2 * trace_cc, 0.0)) / frobenius if frobenius else 0.0
    p_value = None
    if permutations > 0:
        generator = generator or torch.Generator().manual_seed(0)
        extreme = 0
        for _ in range(permutations):
            order = torch.randperm(k, generator=generator)
            extreme += abs(float((a * b[order]).sum() / (k - 1))) >= abs(trace)
        p_value = (1 + extreme) / (1 + permutations)
    return CrossCovariance(trace, frobenius, asymmetry, p_value, k)


def probe_cross_covariance(
    model: DensityModel,
    train: Tensor,
    batch_size: int,
    probes: int,
    generator: torch.Generator,
    permutations: int = 0,
) -> CrossCovariance:
    """The probe at the current iterate. Touches no .grad, optimizer or training RNG stream."""
    thetas, grads = [], []
    with model.undisturbed():
        for _ in range(probes):
            index = torch.randint(train.shape[0], (batch_size,), generator=generator)
            loss = model.loss(train[index.to(train.device)])
            theta, grad = _iterate_and_slack_gradient(model, loss)
            thetas.append(theta)
            grads.append(grad)
    return cross_covariance(torch.stack(thetas), torch.stack(grads), permutations, generator)


def _iterate_and_slack_gradient(model: DensityModel, loss: Tensor) -> tuple[Tensor, Tensor]:
    """theta~ of the constrained entries and dloss/db on them, concatenated over methods.
    A method without a trainable slack (pgd, softplus, slack=false) contributes its
    pre-positivity values and zero gradients: its centred iterate does not vary over probes."""
    thetas, slacks = [], []
    for method in model.constraint_methods():
        pre = method.pre_positivity()
        thetas.append(torch.cat([v.detach().reshape(-1) for v in pre.values()]))
        slacks.append(method.probe_slack())
    wanted = [slack for slack, _ in filter(None, slacks)]
    found = iter(torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else [])
    grads = []
    for theta, slack in zip(thetas, slacks, strict=True):
        if slack is None:
            grads.append(torch.zeros_like(theta))
            continue
        target, mask = slack
        grad = next(found)
        grad = torch.zeros_like(target) if grad is None else grad
        grads.append(grad[mask.to(grad.device)].detach())
    return torch.cat(thetas), torch.cat(grads)


class ShoulderDwell:
    """How long constrained entries of softplus-type methods stay on the shoulder
    (sigmoid(pre-positivity) < SHOULDER), observed at every evaluation.

    Spells are counted in evaluations, streaming (one int per entry); `survival()` gives the
    Kaplan-Meier estimate of P(dwell >= t), spells still on the shoulder at the end censored.
    """

    def __init__(self, eval_every: int) -> None:
        self.eval_every = eval_every
        self._run: Tensor | None = None
        self._ended: list[Tensor] = []

    def observe(self, model: DensityModel) -> None:
        masks = [
            method.dead_mask().cpu()
            for method in model.constraint_methods()
            if method.has_shoulder  # pgd has a bound, not a shoulder
        ]
        if not masks:
            return
        on = torch.cat(masks)
        run = torch.zeros(on.shape, dtype=torch.int64) if self._run is None else self._run
        finished = (run > 0) & ~on
        if bool(finished.any()):
            self._ended.append(run[finished].clone())
        self._run = torch.where(on, run + 1, torch.zeros_like(run))

    def survival(self) -> list[dict[str, float]]:
        """Rows: dwell (steps), at_risk, ended, survival; empty when nothing was observed."""
        if self._run is None:
            return []
        ended = torch.cat(self._ended) if self._ended else torch.zeros(0, dtype=torch.int64)
        censored = self._run[self._run > 0]
        durations = torch.cat([ended, censored])
        if durations.numel() == 0:
            return []
        top = int(durations.max())
        ended_at = torch.bincount(ended, minlength=top + 1)
        total_at = torch.bincount(durations, minlength=top + 1)
        at_risk = total_at.flip(0).cumsum(0).flip(0)  # spells lasting >= t evaluations
        rows, alive = [], 1.0
        for t in range(1, top + 1):
            n, d = int(at_risk[t]), int(ended_at[t])
            if n == 0:
                break
            alive *= 1 - d / n
            rows.append(
                {"dwell_steps": t * self.eval_every, "at_risk": n, "ended": d, "survival": alive}
            )
        return rows
