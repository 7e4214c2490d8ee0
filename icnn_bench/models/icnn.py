"""Functional input-convex neural network (ICNN).

    z1     = softplus(A0 x + b0)
    z(l+1) = softplus(W_l z_l + A_l x + b_l)      W_l >= 0     (l = 1..L-1)
    E(x)   = wL . zL + aL . x + (alpha/2) |x|^2    wL  >= 0

The network is a pure function of a parameter dict, so a weight source (pgd, softplus, lift)
decides where the tensors come from and the ICNN only says which of them must be non-negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from icnn_bench import checks
from icnn_bench.errors import ConfigError

INITS = ("folded_normal", "convex_init", "torch_default")
FREE_INITS = ("uniform", "xavier")  # free tensors: ours (LeCun-uniform) | the authors' code


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    constrained: bool  # must be elementwise non-negative for E to be convex in x


@dataclass(frozen=True)
class ICNNSpec:
    dim: int
    width: int
    depth: int
    alpha: float = 0.02
    # divide each non-negative weighted sum by its fan-in (the width): keeps activations of
    # deep ICNNs from growing geometrically with depth; off in the paper's EBM recipes
    normalise_positive: bool = False

    def __post_init__(self) -> None:
        for key in ("dim", "width", "depth"):
            checks.integer(f"model.{key}", getattr(self, key))
        checks.number("model.alpha", self.alpha, strict=False)
        checks.boolean("model.normalise_positive", self.normalise_positive)

    def tensors(self) -> list[TensorSpec]:
        d, h = self.dim, self.width
        specs = [TensorSpec("A0", (h, d), False), TensorSpec("b0", (h,), False)]
        for layer in range(1, self.depth):
            specs += [
                TensorSpec(f"W{layer}", (h, h), True),
                TensorSpec(f"A{layer}", (h, d), False),
                TensorSpec(f"b{layer}", (h,), False),
            ]
        specs += [TensorSpec("wL", (h,), True), TensorSpec("aL", (d,), False)]
        return specs

    def constrained_names(self) -> list[str]:
        return [t.name for t in self.tensors() if t.constrained]


def effective_params(params: dict[str, Tensor], spec: ICNNSpec) -> dict[str, Tensor]:
    """The tensors the network multiplies by (constrained ones scaled when normalise_positive)."""
    if not spec.normalise_positive:
        return params
    scaled = dict(params)
    for name in spec.constrained_names():
        scaled[name] = params[name] / spec.width
    return scaled


def energy(params: dict[str, Tensor], x: Tensor, spec: ICNNSpec) -> Tensor:
    """E(x) for a batch x of shape (n, dim); returns shape (n,)."""
    params = effective_params(params, spec)
    z = F.softplus(x @ params["A0"].T + params["b0"])
    for layer in range(1, spec.depth):
        pre = z @ params[f"W{layer}"].T + x @ params[f"A{layer}"].T + params[f"b{layer}"]
        z = F.softplus(pre)
    return z @ params["wL"] + x @ params["aL"] + 0.5 * spec.alpha * (x * x).sum(-1)


def init_params(
    spec: ICNNSpec, init: str, generator: torch.Generator, free_init: str = "uniform"
) -> dict[str, Tensor]:
    """Sample initial values of every ICNN tensor (constrained ones non-negative). Free
    tensors: `uniform` (LeCun-uniform matrices and biases) or `xavier` (the paper authors'
    code: xavier-uniform input and skip matrices, zero biases)."""
    if init not in INITS:
        raise ConfigError(f"unknown model.init={init!r}; choose one of: {', '.join(INITS)}")
    if free_init not in FREE_INITS:
        raise ConfigError(
            f"unknown model.free_init={free_init!r}; choose one of: {', '.join(FREE_INITS)}"
        )
    if free_init == "xavier":
        return _xavier_free(init_params(spec, init, generator), spec, generator)
    params: dict[str, Tensor] = {}
    for t in spec.tensors():
        fan_in = t.shape[-1] if len(t.shape) == 2 else spec.width
        if t.name.startswith("b") or t.name == "aL":
            bound = 1.0 / math.sqrt(spec.dim if t.name == "b0" else fan_in)
            params[t.name] = _uniform(t.shape, bound, generator)
        elif not t.constrained:  # input skips A_l: unconstrained, LeCun-style
            params[t.name] = _uniform(t.shape, 1.0 / math.sqrt(fan_in), generator)
        elif init == "folded_normal":
            std = math.sqrt(math.pi / (2.0 * fan_in))
            params[t.name] = (torch.randn(t.shape, generator=generator) * std).abs()
        elif init == "convex_init":
            params[t.name] = _convex_init_weight(t.shape, fan_in, generator)
        else:  # torch_default: nn.Linear's uniform, folded to be non-negative
            params[t.name] = _uniform(t.shape, 1.0 / math.sqrt(fan_in), generator).abs()
    if init == "convex_init":
        for layer in range(1, spec.depth):
            params[f"b{layer}"] = torch.full((spec.width,), _convex_init_bias(spec.width))
    return params


def _xavier_free(
    params: dict[str, Tensor], spec: ICNNSpec, generator: torch.Generator
) -> dict[str, Tensor]:
    """Replace the free tensors: xavier-uniform matrices (aL as a 1 x d matrix), zero biases."""
    for t in spec.tensors():
        if t.constrained:
            continue
        if t.name.startswith("b"):
            params[t.name] = torch.zeros(t.shape)
        else:
            fan_out, fan_in = (1, t.shape[0]) if len(t.shape) == 1 else t.shape
            params[t.name] = _uniform(t.shape, math.sqrt(6.0 / (fan_in + fan_out)), generator)
    return params


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound


# Hoedt & Klambauer (NeurIPS 2023): non-negative weights drawn log-normal so that the
# pre-activations keep unit variance and correlation 0.5 across layers; a negative bias
# removes the mean shift that positive weights create.
_CORR = 0.5


def _convex_init_moments(fan_in: int) -> tuple[float, float]:
    mixed = math.sqrt(1 - _CORR**2) + _CORR * math.acos(-_CORR)
    corr_gain = fan_in * (math.pi - fan_in + (fan_in - 1) * mixed) / (2 * math.pi)
    mean_sq = _CORR / corr_gain
    variance = 2.0 * (1.0 - _CORR) / fan_in
    return mean_sq, variance


def _convex_init_weight(shape: tuple[int, ...], fan_in: int, generator: torch.Generator) -> Tensor:
    mean_sq, variance = _convex_init_moments(fan_in)
    second_moment = mean_sq + variance
    log_mean = math.log(mean_sq) - 0.5 * math.log(second_moment)
    log_std = math.sqrt(math.log(second_moment) - math.log(mean_sq))
    return torch.exp(torch.randn(shape, generator=generator) * log_std + log_mean)


def _convex_init_bias(fan_in: int) -> float:
    mean_sq, _ = _convex_init_moments(fan_in)
    return -fan_in * math.sqrt(mean_sq / (2 * math.pi))
