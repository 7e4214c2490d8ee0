"""What every log Z estimator offers: a training value (with gradients), an evaluation
estimate with its Monte Carlo error, and what it declares about itself."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench.errors import Diverged
from icnn_bench.side_state import SideState

EnergyFn = Callable[[Tensor], Tensor]


class NonFiniteWeights(Diverged):
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
    #: `diagnostics` adds metrics.csv columns
    has_diagnostics: bool = False

    @abstractmethod
    def forward(self, energy_fn: EnergyFn, training: bool) -> Tensor:
        """log Z of exp(-energy_fn); `training`: the cheaper, differentiable training value."""

    @abstractmethod
    def estimate(self, energy_fn: EnergyFn) -> LogZEstimate:
        """The evaluation value with its Monte Carlo standard error."""

    def evaluation_grid(self) -> tuple[Tensor, float] | None:
        """Equal-cell grid nodes and log cell volume, where the estimator integrates on one."""
        return None

    # optional hooks: a learned sampler trains alongside the EBM

    def adapt(self, energy_fn: EnergyFn, log_z: Tensor) -> None:
        """After each training step's log Z: `energy_fn` is that step's energy, detached."""

    def warm_up(self, energy_fns: Callable[[], EnergyFn]) -> None:
        """Before the first training step (energy_fns() gives the current energy)."""

    def diagnostics(self, energy_fn: EnergyFn) -> dict[str, float]:
        """metrics.csv columns at each evaluation (energy_fn: the evaluation energy)."""
        return {}

    def summary(self) -> dict[str, Any]:
        """result.json entries after training."""
        return {}


def snis_estimate(log_w: Tensor) -> LogZEstimate:
    """log Z = logmeanexp(log w) and its delta-method standard error se(mean w) / mean w."""
    log_w = log_w.double()
    n = log_w.numel()
    w = torch.exp(log_w - log_w.max())  # rescaled; the ratio below is scale-free
    se = float(w.std() / (math.sqrt(n) * w.mean()))
    return LogZEstimate(float(torch.logsumexp(log_w, 0) - math.log(n)), se, n)
