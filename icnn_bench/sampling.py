"""Drawing samples from a fitted energy: Metropolis-adjusted Langevin (MALA)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from icnn_bench.devices import to_device


def mala(
    energy_fn: Callable[[Tensor], Tensor],
    init: Tensor,
    steps: int = 500,
    step_size: float = 0.05,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Chains started at `init` (n, d) targeting exp(-E); the accept step removes the bias
    of plain Langevin, so the chains keep exp(-E) invariant whatever the step size. The
    noise is drawn on the CPU (`generator`: a CPU stream), so chains match across devices."""

    def energy_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        energy = energy_fn(x)
        (grad,) = torch.autograd.grad(energy.sum(), x)
        return energy.detach(), grad.detach()

    def log_proposal(to: Tensor, frm: Tensor, grad_frm: Tensor) -> Tensor:
        return -((to - frm + step_size * grad_frm) ** 2).sum(-1) / (4 * step_size)

    x = init.detach().clone()
    energy, grad = energy_and_grad(x)
    for _ in range(steps):
        noise = to_device(torch.randn(x.shape, generator=generator, dtype=x.dtype), x.device)
        proposal = x - step_size * grad + math.sqrt(2 * step_size) * noise
        proposal_energy, proposal_grad = energy_and_grad(proposal)
        log_accept = (
            energy
            - proposal_energy
            + log_proposal(x, proposal, proposal_grad)
            - log_proposal(proposal, x, grad)
        )
        uniform = to_device(torch.rand(log_accept.shape, generator=generator), x.device)
        accept = torch.log(uniform) < log_accept
        x = torch.where(accept[:, None], proposal, x)
        energy = torch.where(accept, proposal_energy, energy)
        grad = torch.where(accept[:, None], proposal_grad, grad)
    return x
