"""W = relu(V) in the forward pass, with the scaled uniform initialisation and bias shift of
Hoedt & Klambauer's ClippedPositivity (ml-jku/convex-init); also ott-jax's default
rectifier for ICNN weights. An entry with V <= 0 has no gradient: it is dead for good."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from icnn_bench.methods.positivity import PositivityWeights

SCALE = 4.0 / math.sqrt(8.0 - 3.0 / math.pi)  # the source's factor on a Kaiming-uniform draw


class ReluWeights(PositivityWeights):
    def positive(self, raw: Tensor) -> Tensor:
        return torch.relu(raw)

    def initial_raw(
        self, shape: tuple[int, ...], fan_in: int, gain: float, generator: torch.Generator
    ) -> Tensor:
        bound = math.sqrt(6.0 / fan_in)  # Kaiming-uniform for a ReLU (gain sqrt 2)
        uniform = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        return uniform * SCALE * gain

    def bias_shift(self, fan_in: int) -> float:
        return math.sqrt(3.0 * fan_in / (8.0 * math.pi - 3.0))

    def dead_mask(self) -> Tensor:
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return values <= 0
