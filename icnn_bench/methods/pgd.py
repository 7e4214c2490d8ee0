"""Projected gradient descent: raw weights, clamped to >= 0 after every optimizer step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec


class ProjectedWeights(ConstraintMethod):
    has_shoulder = False  # a clamped entry sits at the bound 0, not on a shoulder

    def __init__(self, spec: ICNNSpec, init: dict[str, Tensor]) -> None:
        super().__init__(spec)
        self.params = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in init.items()})
        self._constrained = spec.constrained_names()

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        return dict(self.params.items())

    def pre_positivity(self) -> dict[str, Tensor]:
        return {k: self.params[k] for k in self._constrained}

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [self.params[k] for k in self._constrained]

    @torch.no_grad()
    def project_(self) -> None:
        for k in self._constrained:
            self.params[k].clamp_(min=0.0)

    def dead_mask(self) -> Tensor:
        # A clamped entry sits exactly at zero: its gradient on the negative side is cut.
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return values <= 0
