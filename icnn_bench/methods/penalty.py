"""A soft constraint: the weights are trained unconstrained, with lam * sum(relu(-W)^2) added
to the loss (Makkuva et al. 2020, "Optimal transport mapping via input convex neural
networks"; ott-jax's neural dual penalises the same negative part). The model evaluated is
always convex: its evaluation emission is the projection max(W, 0), and each evaluation
records how much of the weights' mass was negative before projecting."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec


class PenaltyWeights(ConstraintMethod):
    has_shoulder = False
    nonnegative_in_training = False

    def __init__(self, spec: ICNNSpec, init: dict[str, Tensor], lam: float = 0.1) -> None:
        super().__init__(spec)
        checks.number("method.lam", lam)
        self.lam = lam
        self._constrained = spec.constrained_names()
        self.params = nn.ParameterDict({k: nn.Parameter(v.clone()) for k, v in init.items()})

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        return dict(self.params.items())

    def emit_pinned(self, pool: Tensor) -> dict[str, Tensor]:
        return {
            k: v.clamp(min=0.0) if k in self._constrained else v for k, v in self.params.items()
        }

    def penalty(self) -> Tensor:
        negative = [torch.relu(-self.params[k]).square().sum() for k in self._constrained]
        return self.lam * torch.stack(negative).sum()

    def pre_positivity(self) -> dict[str, Tensor]:
        return {k: self.params[k] for k in self._constrained}

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [self.params[k] for k in self._constrained]

    def dead_mask(self) -> Tensor:
        # a negative entry is zeroed by the projection: no path in the evaluated model
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return values < 0

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        values = torch.cat([u.reshape(-1) for u in self.pre_positivity().values()])
        return {"neg_mass": float(torch.relu(-values).sum() / values.abs().sum().clamp_min(1e-30))}
