"""CP-Flow's positive layers (Huang et al., ICLR 2021; CW-Huang/CP-Flow lib/icnn.py,
PosLinear): W = softplus(V) / fan_in, V drawn as an nn.Linear's weight, U(-1/sqrt(n), 1/sqrt(n)).
Under model.normalise_positive the network divides by the width already."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from icnn_bench.methods.positivity import PositivityWeights


class CPFlowSoftplusWeights(PositivityWeights):
    has_shoulder = True  # dead: on the softplus shoulder, as softplus's

    def positive(self, raw: Tensor) -> Tensor:
        scale = 1.0 if self.spec.normalise_positive else float(self.spec.width)
        return F.softplus(raw) / scale

    def initial_raw(
        self, shape: tuple[int, ...], fan_in: int, gain: float, generator: torch.Generator
    ) -> Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
