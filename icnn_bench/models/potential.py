"""Convex-potential flow (CP-Flow, Huang et al. ICLR 2021): the math of one block.

    F(x)     = softplus(w1) E(x) + softplus(w0) |x|^2 / 2      E: the ICNN of icnn.py
    y        = grad F(x)
    log p(x) = log N(grad F(x); 0, I) + log det Hess F(x)

All curvature of an ICNN comes from its elementwise activations. With a_l the pre-activation
of layer l, J_l = d a_l / d x, g_l = dE/dz_l and c_l = g_l * softplus''(a_l):

    grad E(x) = sum_l A_l^T (g_l * sigmoid(a_l)) + aL + alpha x
    Hess E(x) = alpha I + sum_l J_l^T diag(c_l) J_l,   J_(l+1) = W_l diag(sigmoid(a_l)) J_l + A_l

One forward pass (a_l, J_l) and one backward pass (g_l) give both, batch-wise, with plain
first-order autograd for the parameter gradients (no nested differentiation). The generic
torch.func Hessian is the reference the tests check this against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from icnn_bench.errors import Diverged
from icnn_bench.models import icnn

LOG_2PI = math.log(2 * math.pi)


class InversionError(RuntimeError):
    """Newton's method did not reach the requested residual."""


def potential(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """F(x) for a batch x (n, d); returns (n,)."""
    return F.softplus(w1) * icnn.energy(params, x, spec) + F.softplus(w0) * 0.5 * (x * x).sum(-1)


def _pre_activations(params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec) -> list[Tensor]:
    pres = [x @ params["A0"].T + params["b0"]]
    for layer in range(1, spec.depth):
        z = F.softplus(pres[-1])
        pres.append(z @ params[f"W{layer}"].T + x @ params[f"A{layer}"].T + params[f"b{layer}"])
    return pres


def _output_sensitivities(
    params: dict[str, Tensor], sigmoids: list[Tensor], spec: icnn.ICNNSpec
) -> list[Tensor]:
    """g_l = dE/dz_l for every layer (non-negative when the constrained weights are)."""
    grad_z = params["wL"].expand_as(sigmoids[-1])
    out = [grad_z]
    for layer in range(spec.depth - 1, 0, -1):
        grad_z = (grad_z * sigmoids[layer]) @ params[f"W{layer}"]
        out.append(grad_z)
    return out[::-1]


def _energy_gradient(
    params: dict[str, Tensor], x: Tensor, sigmoids: list[Tensor], sens: list[Tensor], alpha: float
) -> Tensor:
    grad = params["aL"] + alpha * x
    for layer, (sig, g) in enumerate(zip(sigmoids, sens, strict=True)):
        grad = grad + (g * sig) @ params[f"A{layer}"]
    return grad


def _energy_hessian(
    params: dict[str, Tensor], x: Tensor, sigmoids: list[Tensor], sens: list[Tensor], alpha: float
) -> Tensor:
    # Jacobians kept transposed, (n, d, h), so each layer's propagation is one large GEMM
    # over n*d rows and each curvature term accumulates in place into Hess.
    n, d = x.shape
    jac_t = params["A0"].T.expand(n, d, -1)
    hess = torch.zeros(n, d, d, dtype=x.dtype, device=x.device)
    for layer, (sig, g) in enumerate(zip(sigmoids, sens, strict=True)):
        if layer > 0:
            scaled = (jac_t * sigmoids[layer - 1].unsqueeze(1)).reshape(n * d, -1)
            jac_t = (scaled @ params[f"W{layer}"].T).reshape(n, d, -1) + params[f"A{layer}"].T
        curvature = g * sig * (1 - sig)
        hess = torch.baddbmm(hess, jac_t * curvature.unsqueeze(1), jac_t.transpose(1, 2))
    return hess + alpha * torch.eye(d, dtype=x.dtype, device=x.device)


def energy_gradient(params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec) -> Tensor:
    """grad E(x), (n, d), without autograd through x."""
    params = icnn.effective_params(params, spec)
    sigmoids = [torch.sigmoid(a) for a in _pre_activations(params, x, spec)]
    sens = _output_sensitivities(params, sigmoids, spec)
    return _energy_gradient(params, x, sigmoids, sens, spec.alpha)


def energy_hessian(params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec) -> Tensor:
    """Hess E(x) per sample, (n, d, d), from the ICNN's structure."""
    params = icnn.effective_params(params, spec)
    sigmoids = [torch.sigmoid(a) for a in _pre_activations(params, x, spec)]
    sens = _output_sensitivities(params, sigmoids, spec)
    return _energy_hessian(params, x, sigmoids, sens, spec.alpha)


def gradient_and_hessian(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> tuple[Tensor, Tensor]:
    """y = grad F(x) (n, d) and Hess F(x) (n, d, d) from one structured pass."""
    params = icnn.effective_params(params, spec)
    sigmoids = [torch.sigmoid(a) for a in _pre_activations(params, x, spec)]
    sens = _output_sensitivities(params, sigmoids, spec)
    k0, k1 = F.softplus(w0), F.softplus(w1)
    grad = k1 * _energy_gradient(params, x, sigmoids, sens, spec.alpha) + k0 * x
    hess = k1 * _energy_hessian(params, x, sigmoids, sens, spec.alpha)
    return grad, hess + k0 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)


def potential_gradient(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """y = grad F(x), (n, d); differentiable in x and in the parameters."""
    return F.softplus(w1) * energy_gradient(params, x, spec) + F.softplus(w0) * x


def potential_hessian(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """Hess F(x) = softplus(w1) Hess E(x) + softplus(w0) I, (n, d, d)."""
    return gradient_and_hessian(params, x, spec, w0, w1)[1]


def cholesky_log_det(hess: Tensor) -> Tensor:
    """log det of symmetric positive-definite Hessians; Diverged where one is not (the
    potential is not convex there: weights that went negative, e.g. method=penalty)."""
    chol, info = torch.linalg.cholesky_ex(hess)
    if bool((info != 0).any()):
        raise Diverged(
            f"the potential's Hessian is not positive definite at {int((info != 0).sum())} of "
            f"{hess.shape[0]} points: it is not convex there (constrained weights negative?)"
        )
    return 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def log_prob(
    params: dict[str, Tensor], x: Tensor, spec: icnn.ICNNSpec, w0: Tensor, w1: Tensor
) -> Tensor:
    """Exact log-density of x under one block with a standard normal base, (n,)."""
    y, hess = gradient_and_hessian(params, x, spec, w0, w1)
    return standard_normal_log_prob(y) + cholesky_log_det(hess)


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
    """x with grad F(x) = y, by damped Newton on the strongly convex F(x) - <x, y>, in float64
    (float32 objectives are too coarse to judge steps near the solution).

    Raises InversionError (never loops forever) when max |grad F(x) - y| stays above
    tol * (1 + max |y|).
    """
    dtype = y.dtype
    params = {k: v.double() for k, v in params.items()}
    w0, w1, y = w0.double(), w1.double(), y.double()

    def objective(v: Tensor) -> Tensor:
        return potential(params, v, spec, w0, w1) - (v * y).sum(-1)

    threshold = tol * (1 + float(y.abs().max()))
    x = y / F.softplus(w0)  # start: invert the quadratic part alone
    value = objective(x)
    worst = math.inf
    for _ in range(steps):
        grad, hess = gradient_and_hessian(params, x, spec, w0, w1)
        residual = grad - y
        worst = float(residual.abs().max())
        if worst < threshold:
            return x.to(dtype)
        step = torch.linalg.solve(hess, residual.unsqueeze(-1)).squeeze(-1)
        scale = torch.ones_like(value)
        unsettled = residual.abs().amax(-1) >= threshold  # converged rows keep full steps
        for _ in range(30):  # backtracking: only accept steps that lower the objective
            candidate = x - scale.unsqueeze(-1) * step
            new_value = objective(candidate)
            slack = 1e-12 * (1 + value.abs())  # rounding of the float64 objective
            worse = ~(new_value <= value + slack) & unsettled
            if not bool(worse.any()):
                break
            scale = torch.where(worse, scale / 2, scale)
        x, value = candidate, new_value
    raise InversionError(
        f"inverting grad F did not converge in {steps} Newton steps "
        f"(max residual {worst:.2e} > {threshold:.1e})"
    )
