"""Log-concave energy-based model p(x) = exp(-E(x)) / Z with an ICNN energy."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench.methods.base import WeightSource
from icnn_bench.models import icnn
from icnn_bench.models.base import DensityModel
from icnn_bench.objectives.base import LogZEstimate
from icnn_bench.objectives.importance import ImportanceLogZ
from icnn_bench.objectives.quadrature import QuadratureLogZ


class EnergyModel(DensityModel):
    """An ICNN energy whose tensors come from a weight source; log Z from an estimator."""

    kind = "ebm"

    def __init__(
        self,
        spec: icnn.ICNNSpec,
        source: WeightSource,
        log_z: QuadratureLogZ | ImportanceLogZ,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.source = source
        self.log_z_estimator = log_z

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the EBM optimizer updates (a learned proposal trains itself)."""
        return [p for p in self.source.parameters() if p.requires_grad]

    def loss(self, batch: Tensor) -> Tensor:
        """Training objective: mean E(batch) + log Z, both with the weights emitted for batch."""
        params = self.source(batch)
        mean_energy = icnn.energy(params, batch, self.spec).mean()
        return mean_energy + self.log_z_estimator(self._energy_fn(params), training=True)

    def energy(self, x: Tensor) -> Tensor:
        """E(x) under the evaluation (pinned) weights."""
        return icnn.energy(self._eval_params(), x, self.spec)

    @torch.no_grad()
    def log_z(self) -> Tensor:
        return self.log_z_estimator(self._energy_fn(self._eval_params()), training=False)

    def log_z_estimate(self) -> LogZEstimate:
        """log Z under the evaluation weights with its Monte Carlo standard error."""
        return self.log_z_estimator.estimate(self._energy_fn(self._eval_params()))

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density under the evaluation (pinned) weights."""
        return -self.energy(x) - self.log_z()

    def evaluation_info(self) -> dict[str, Any]:
        log_z = self.log_z_estimate()
        return {
            "log_z": log_z.value,
            "log_z_se": log_z.se,
            "log_z_samples": log_z.samples,
            "log_z_estimator": self.log_z_estimator.estimate_kind,
        }

    def _eval_params(self) -> dict[str, Tensor]:
        if self.source.pinned is None:
            raise RuntimeError("evaluation needs a pinned emission: call model.source.pin(train)")
        return self.source.pinned

    def _energy_fn(self, params: dict[str, Tensor]):
        return lambda y: icnn.energy(params, y, self.spec)
