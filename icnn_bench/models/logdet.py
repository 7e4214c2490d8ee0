"""Stochastic log-determinant of a batch of symmetric positive-definite Hessians H = dy/dx,
touched only through Hessian-vector products (CP-Flow's estimator for large d).

- gradient: Hutchinson, d log det H = E_v[v^T H^-1 (dH) v]. Conjugate gradients give
  w = H^-1 v without a graph; the surrogate w^T (H v), with w held fixed, has that gradient.
- value: v^T log(H) v by Lanczos quadrature; the Lanczos tridiagonal matrix comes for free
  from the conjugate-gradient coefficients, so the value costs no extra products.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

PROBES = ("rademacher", "gaussian")


@dataclass
class StochasticLogDet:
    value: Tensor  # (n,) Lanczos estimate of log det H, no graph
    surrogate: Tensor  # (n,) zero-mean-free term whose gradient is the Hutchinson estimate
    iterations: int  # conjugate-gradient iterations used


@dataclass
class CGResult:
    solution: Tensor  # (n, d)
    alphas: Tensor  # (n, k)
    betas: Tensor  # (n, k)
    active: Tensor  # (n, k) bool: sample still iterating at step j
    rhs_sq_norm: Tensor  # (n,)


def draw_probe(
    shape: tuple[int, ...], kind: str, generator: torch.Generator, like: Tensor
) -> Tensor:
    if kind not in PROBES:
        raise ValueError(f"probe={kind!r}; choose one of: {', '.join(PROBES)}")
    if kind == "gaussian":
        draw = torch.randn(shape, generator=generator, dtype=like.dtype)
    else:
        draw = 2.0 * torch.randint(0, 2, shape, generator=generator, dtype=like.dtype) - 1.0
    return draw.to(like.device)  # drawn on the generator's device, so runs match across devices


@torch.no_grad()
def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], rhs: Tensor, max_iters: int, rtol: float
) -> CGResult:
    """Solve H x = rhs for every row independently; rows stop once |r| <= rtol |rhs|."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = (r * r).sum(-1)
    stop = rtol * rs.sqrt()
    active = rs > 0
    alphas, betas, actives = [], [], []
    tiny = torch.finfo(rhs.dtype).tiny
    for _ in range(max_iters):
        hp = matvec(p)
        curvature = (p * hp).sum(-1)
        alpha = torch.where(active, rs / curvature.clamp_min(tiny), torch.zeros_like(rs))
        x = x + alpha.unsqueeze(-1) * p
        r = r - alpha.unsqueeze(-1) * hp
        rs_new = (r * r).sum(-1)
        beta = torch.where(active, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        alphas.append(alpha)
        betas.append(beta)
        actives.append(active)
        active = active & (rs_new.sqrt() > stop)
        p = r + beta.unsqueeze(-1) * p
        rs = rs_new
        # a CPU stops once every row has converged; a GPU runs all max_iters rather than
        # wait for the host each iteration (a converged row's later steps change nothing)
        if rhs.device.type == "cpu" and not bool(active.any()):
            break
    return CGResult(
        solution=x,
        alphas=torch.stack(alphas, -1),
        betas=torch.stack(betas, -1),
        active=torch.stack(actives, -1),
        rhs_sq_norm=(rhs * rhs).sum(-1),
    )


def lanczos_log_quadratic_form(cg: CGResult) -> Tensor:
    """v^T log(H) v from the Lanczos matrix T implied by CG's coefficients (n,)."""
    alphas, betas, active = cg.alphas, cg.betas, cg.active

    safe_alpha = torch.where(active, alphas, torch.ones_like(alphas))
    diag = 1 / safe_alpha
    diag[:, 1:] = diag[:, 1:] + torch.where(
        active[:, 1:], betas[:, :-1] / safe_alpha[:, :-1], torch.zeros_like(diag[:, 1:])
    )
    diag = torch.where(active, diag, torch.ones_like(diag))  # decoupled filler rows
    off = torch.where(active[:, 1:], betas[:, :-1].clamp_min(0).sqrt() / safe_alpha[:, :-1], 0.0)
    tri = torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    eigenvalues, eigenvectors = torch.linalg.eigh(tri)
    weights = eigenvectors[:, 0, :] ** 2
    log_eig = eigenvalues.clamp_min(torch.finfo(tri.dtype).tiny).log()
    return cg.rhs_sq_norm * (weights * log_eig).sum(-1)


def stochastic_log_det(
    y: Tensor,
    x: Tensor,
    probe: Tensor,
    max_iters: int,
    rtol: float = 1e-4,
    create_graph: bool = True,
) -> StochasticLogDet:
    """log det (dy/dx) per row, for y = grad F(x) built with a graph from x (x.requires_grad)."""

    def matvec(v: Tensor) -> Tensor:
        return torch.autograd.grad(y, x, v, retain_graph=True)[0]

    cg = conjugate_gradient(matvec, probe, max_iters, rtol)
    value = lanczos_log_quadratic_form(cg)
    if create_graph:
        h_probe = torch.autograd.grad(y, x, probe, create_graph=True, retain_graph=True)[0]
        surrogate = (cg.solution * h_probe).sum(-1)
    else:
        surrogate = torch.zeros_like(value)
    return StochasticLogDet(value=value, surrogate=surrogate, iterations=cg.alphas.shape[1])
