"""W = exp(V) with Hoedt & Klambauer's principled initialisation (NeurIPS 2023, "Principled
weight initialisation for input-convex neural networks"; ml-jku/convex-init,
ExponentialPositivity): V ~ N(mu, s^2) so that the log-normal weights keep the
pre-activations' scale and correlation across layers, and the following bias is shifted
down by the mean the positive weights add."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icnn_bench.methods.positivity import PositivityWeights

_ROOT3 = math.sqrt(3.0)


def log_normal_moments(fan_in: int) -> tuple[float, float, float]:
    """(mu, s^2, shift) of the source's formula for a layer with this fan-in."""
    n, pi = fan_in, math.pi
    grow = n * (2 * pi + 3 * _ROOT3 - 6)
    mean = math.log(6 * pi) - 0.5 * math.log(
        n * (4 * pi - 3 * _ROOT3 + grow) * (10 * pi - 3 * _ROOT3 + grow)
    )
    variance = math.log(10 - 3 * _ROOT3 + grow) - math.log(6 * pi)  # "10", as the source
    shift = math.sqrt(3 * n / (4 * pi - 3 * _ROOT3 + grow))
    return mean, variance, shift


class ExpWeights(PositivityWeights):
    def positive(self, raw: Tensor) -> Tensor:
        return raw.exp()

    def initial_raw(
        self, shape: tuple[int, ...], fan_in: int, gain: float, generator: torch.Generator
    ) -> Tensor:
        mean, variance, _ = log_normal_moments(fan_in)
        noise = torch.randn(shape, generator=generator)
        return mean + math.log(gain) + math.sqrt(variance) * noise

    def bias_shift(self, fan_in: int) -> float:
        return log_normal_moments(fan_in)[2]

    def dead_mask(self) -> Tensor:
        # dW/dV = W > 0 everywhere: a small weight learns slowly but never stops
        return torch.zeros(sum(v.numel() for v in self.pre_positivity().values()), dtype=bool)
