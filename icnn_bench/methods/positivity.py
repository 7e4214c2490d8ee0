"""Elementwise positivity of a trained raw tensor, W = positive(V), with the raw tensor's
initialisation taken from the method's source rather than from the model's `init`.

The field's methods (exp, relu, negexp) differ only in the rule and in their source's
initialisation of V and of the biases b_l that follow a constrained matrix; this class holds
what they share, so each is its rule, its init and what counts as a dead entry.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor, nn

from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec


class PositivityWeights(ConstraintMethod):
    has_shoulder = False

    def __init__(self, spec: ICNNSpec, init: dict[str, Tensor], generator: torch.Generator) -> None:
        super().__init__(spec)
        self._constrained = spec.constrained_names()
        # normalise_positive divides each non-negative sum by the width: the raw values are
        # drawn so that the weights the network multiplies by follow the source's law
        gain = float(spec.width) if spec.normalise_positive else 1.0
        tensors = {k: v.clone() for k, v in init.items()}
        for t in spec.tensors():
            if t.constrained:  # W_l (h x h) and wL (h,): fan-in h
                tensors[t.name] = self.initial_raw(t.shape, spec.width, gain, generator)
        shift = self.bias_shift(spec.width)
        if shift is not None:  # the biases of the layers fed by a constrained matrix
            for layer in range(1, spec.depth):
                tensors[f"b{layer}"] = torch.full((spec.width,), -shift)
        self.params = nn.ParameterDict({k: nn.Parameter(v) for k, v in tensors.items()})

    @abstractmethod
    def positive(self, raw: Tensor) -> Tensor:
        """The rule: a non-negative tensor from the raw one."""

    @abstractmethod
    def initial_raw(
        self, shape: tuple[int, ...], fan_in: int, gain: float, generator: torch.Generator
    ) -> Tensor:
        """The source's initial raw values (`gain`: the weights are divided by it)."""

    def bias_shift(self, fan_in: int) -> float | None:
        """The source's negative bias shift of the following layer (None: keep the model's)."""
        return None

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        return {
            k: self.positive(v) if k in self._constrained else v for k, v in self.params.items()
        }

    def pre_positivity(self) -> dict[str, Tensor]:
        return {k: self.params[k] for k in self._constrained}

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [self.params[k] for k in self._constrained]
