"""Direct reparametrisation W = softplus(V); free tensors are plain parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec


def inverse_softplus(w: Tensor) -> Tensor:
    """V with softplus(V) = w, for w > 0 (tiny w are lifted to 1e-6 first)."""
    w = w.clamp(min=1e-6)
    return w + torch.log(-torch.expm1(-w))


class SoftplusWeights(ConstraintMethod):
    def __init__(self, spec: ICNNSpec, init: dict[str, Tensor]) -> None:
        super().__init__(spec)
        self._constrained = spec.constrained_names()
        self.params = nn.ParameterDict(
            {
                k: nn.Parameter(inverse_softplus(v) if k in self._constrained else v.clone())
                for k, v in init.items()
            }
        )

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        return {k: F.softplus(v) if k in self._constrained else v for k, v in self.params.items()}

    def pre_positivity(self) -> dict[str, Tensor]:
        return {k: self.params[k] for k in self._constrained}

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [self.params[k] for k in self._constrained]
