"""W = exp(V) where V < 0, V elsewhere (Sivaprasad et al. 2021, "The Curious Case of Convex
Neural Networks"; NegExpPositivity in ml-jku/convex-init's history, whose initialisation is
Kaiming-normal with zero biases). W jumps from 1 to 0 as V crosses 0 from below, as in the
source. Dead: V so negative that dW/dV = exp(V) is below the shoulder threshold."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icnn_bench.methods.base import SHOULDER
from icnn_bench.methods.positivity import PositivityWeights


class NegExpWeights(PositivityWeights):
    has_shoulder = True  # a vanishing derivative, as softplus's

    def positive(self, raw: Tensor) -> Tensor:
        return torch.where(raw < 0, raw.exp(), raw)

    def initial_raw(
        self, shape: tuple[int, ...], fan_in: int, gain: float, generator: torch.Generator
    ) -> Tensor:
        # the source's init is for plain sums; under normalise_positive it is kept as is
        return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)

    def bias_shift(self, fan_in: int) -> float:
        return 0.0  # the source zeroes the biases

    def dead_mask(self) -> Tensor:
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return values < math.log(SHOULDER)
