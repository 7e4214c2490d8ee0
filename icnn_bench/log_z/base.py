"""What every log Z estimator offers: a training value (with gradients), an evaluation
estimate with its Monte Carlo error, and what it declares about itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from icnn_bench.side_state import SideState

EnergyFn = Callable[[Tensor], Tensor]


class NonFiniteWeights(ArithmeticError):
    """An estimator produced importance weights that are not finite."""


@dataclass(frozen=True)
class LogZEstimate:
    value: float
    se: float  # Monte Carlo standard error (0 for quadrature, which is exact up to grid error)
    samples: int  # proposal draws, or grid nodes for quadrature


class LogZEstimator(nn.Module, SideState, ABC):
    #: result.json's `log_z_estimator`
    estimate_kind: str = "estimate"
    #: the training value is a deterministic function of the energy (seeds can be vmapped)
    deterministic: bool = False

    @abstractmethod
    def forward(self, energy_fn: EnergyFn, training: bool) -> Tensor:
        """log Z of exp(-energy_fn); `training`: the cheaper, differentiable training value."""

    @abstractmethod
    def estimate(self, energy_fn: EnergyFn) -> LogZEstimate:
        """The evaluation value with its Monte Carlo standard error."""

    def evaluation_grid(self) -> tuple[Tensor, float] | None:
        """Equal-cell grid nodes and log cell volume, where the estimator integrates on one."""
        return None
