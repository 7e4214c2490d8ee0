"""Convex-potential flow (CP-Flow, Huang et al. ICLR 2021), one block.

    F(x)     = softplus(w1) E(x) + softplus(w0) |x|^2 / 2      E: the ICNN of icnn.py
    y        = grad F(x)
    log p(x) = log N(grad F(x); 0, I) + log det Hess F(x)

All curvature of an ICNN comes from its elementwise activations, so with a_l the
pre-activation of layer l, J_l = d a_l / d x and c_l = dE/dz_l * softplus''(a_l):

    Hess E(x) = alpha I + sum_l J_l^T diag(c_l) J_l,   J_(l+1) = W_l diag(sigmoid(a_l)) J_l + A_l

which this module builds batch-wise (the "structured" route) and checks against torch.func.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from icnn_bench.models import icnn


def potential(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """F(x) for a batch x (n, d); returns (n,)."""
    return F.softplus(w1) * icnn.energy(params, x, spec) + F.softplus(w0) * 0.5 * (x * x).sum(-1)


def _forward_with_jacobians(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec
) -> tuple[list[Tensor], list[Tensor]]:
    """Pre-activations a_l (n, h) and their input Jacobians J_l (n, h, d), l = 1..L."""
    n = x.shape[0]
    pre = x @ params["A0"].T + params["b0"]
    jac = params["A0"].expand(n, *params["A0"].shape)
    pres, jacs = [pre], [jac]
    for layer in range(1, spec.depth):
        weight = params[f"W{layer}"]
        z = F.softplus(pre)
        pre = z @ weight.T + x @ params[f"A{layer}"].T + params[f"b{layer}"]
        # J_(l+1) = W diag(sigmoid(a_l)) J_l + A_l
        jac = torch.einsum("ij,nj,njd->nid", weight, torch.sigmoid(pres[-1]), jac)
        jac = jac + params[f"A{layer}"]
        pres.append(pre)
        jacs.append(jac)
    return pres, jacs


def energy_hessian(params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec) -> Tensor:
    """Hess E(x) per sample, (n, d, d), from the ICNN's structure (no nested autograd)."""
    pres, jacs = _forward_with_jacobians(params, x, spec)
    # backward pass for g_l = dE/dz_l
    grad_z = params["wL"].expand_as(pres[-1])
    hess = spec.alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device).expand(
        x.shape[0], -1, -1
    )
    for layer in range(spec.depth, 0, -1):
        pre, jac = pres[layer - 1], jacs[layer - 1]
        sig = torch.sigmoid(pre)
        curvature = grad_z * sig * (1 - sig)  # c_l = dE/dz_l * softplus''(a_l)
        hess = hess + torch.einsum("nhd,nh,nhe->nde", jac, curvature, jac)
        if layer > 1:
            grad_z = (grad_z * sig) @ params[f"W{layer - 1}"]
    return hess


def potential_hessian(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """Hess F(x) = softplus(w1) Hess E(x) + softplus(w0) I, (n, d, d)."""
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return F.softplus(w1) * energy_hessian(params, x, spec) + F.softplus(w0) * eye


def potential_gradient(
    params: dict[str, Tensor],
    x: Tensor,
    spec: icnn.ICNNSpec,
    w0: Tensor,
    w1: Tensor,
    create_graph: bool = False,
) -> Tensor:
    """y = grad F(x), (n, d)."""
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        value = potential(params, x, spec, w0, w1).sum()
        (grad,) = torch.autograd.grad(value, x, create_graph=create_graph)
    return grad


def log_prob(
    params: dict[str, Tensor],
    x: Tensor,
    spec: icnn.ICNNSpec,
    w0: Tensor,
    w1: Tensor,
    create_graph: bool = False,
) -> Tensor:
    """Exact log-density of x under one CP-Flow block with a standard normal base, (n,)."""
    y = potential_gradient(params, x, spec, w0, w1, create_graph=create_graph)
    chol = torch.linalg.cholesky(potential_hessian(params, x, spec, w0, w1))
    log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_base = -0.5 * (y * y).sum(-1) - 0.5 * x.shape[1] * math.log(2 * math.pi)
    return log_base + log_det


@torch.no_grad()
def inverse(
    params: dict[str, Tensor],
    y: Tensor,
    spec: icnn.ICNNSpec,
    w0: Tensor,
    w1: Tensor,
    steps: int = 50,
    tol: float = 1e-6,
) -> Tensor:
    """x with grad F(x) = y: Newton's method on the strongly convex F(x) - <x, y>."""
    x = y / F.softplus(w0)  # start: invert the quadratic part alone
    for _ in range(steps):
        residual = potential_gradient(params, x, spec, w0, w1) - y
        if float(residual.abs().max()) < tol:
            break
        step = torch.linalg.solve(potential_hessian(params, x, spec, w0, w1), residual)
        x = x - step
    return x
