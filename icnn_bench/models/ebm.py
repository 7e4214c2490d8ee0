"""Log-concave energy-based model p(x) = exp(-E(x)) / Z with an ICNN energy."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench.log_z.base import LogZEstimate, LogZEstimator
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models import icnn
from icnn_bench.models.base import DensityModel

MALA_STEPS = 400  # sample(): Langevin steps from the chains' start
MALA_STEP_SIZE = 0.02


class EnergyModel(DensityModel):
    """An ICNN energy whose tensors come from a constraint method; log Z from an estimator."""

    def __init__(self, spec: icnn.ICNNSpec, method: ConstraintMethod, log_z: LogZEstimator) -> None:
        super().__init__()
        self.spec = spec
        self.method = method
        self.log_z_estimator = log_z

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the EBM optimizer updates (a learned proposal trains itself)."""
        return [p for p in self.method.parameters() if p.requires_grad]

    def loss(self, batch: Tensor) -> Tensor:
        """Training objective: mean E(batch) + log Z, both with the weights emitted for batch."""
        params = self.method(batch)
        mean_energy = icnn.energy(params, batch, self.spec).mean()
        log_z = self.log_z_estimator(self._energy_fn(params), training=True)
        self.log_z_estimator.adapt(self._frozen_energy_fn(params), log_z.detach())
        return self.with_penalty(mean_energy + log_z)

    def warm_up(self, next_batch) -> None:
        self.log_z_estimator.warm_up(lambda: self._frozen_energy_fn(self.method(next_batch())))

    def diagnostics(self, pool: Tensor) -> dict[str, float]:
        """The log Z estimator's own columns (a learned sampler: its error, KL, steps)."""
        if not self.log_z_estimator.has_diagnostics:
            return {}
        self.pin(pool)
        try:
            return self.log_z_estimator.diagnostics(self._energy_fn(self._eval_params()))
        finally:
            self.unpin()

    def training_summary(self) -> dict[str, Any]:
        return self.log_z_estimator.summary()

    def energy(self, x: Tensor) -> Tensor:
        """E(x) under the evaluation (pinned) weights."""
        return self._pinned_energy(x)

    @torch.no_grad()
    def log_z(self) -> Tensor:
        """log Z under the evaluation weights, computed once per pinned emission."""
        memo = self._memo()
        if "log_z" not in memo:
            memo["log_z"] = self.log_z_estimator(self._pinned_energy, training=False)
        return memo["log_z"]

    def log_z_estimate(self) -> LogZEstimate:
        """log Z under the evaluation weights with its Monte Carlo standard error."""
        return self.log_z_estimator.estimate(self._pinned_energy)

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density under the evaluation (pinned) weights."""
        return -self.energy(x) - self.log_z()

    def differentiable_log_prob(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            return -self.energy(x).reshape(-1) - self.log_z()

    def sample(self, n: int, generator: torch.Generator, start: Tensor | None = None) -> Tensor:
        """MALA chains targeting exp(-E), started at `start` (its first n rows) or at the
        origin; a log-concave target mixes fast, so a few hundred steps suffice."""
        from icnn_bench.sampling import mala

        if start is None:
            start = torch.zeros(n, self.spec.dim, device=self.device)
        start = start[:n].to(self.device)
        return mala(self.energy, start, MALA_STEPS, MALA_STEP_SIZE, generator)

    def evaluation_info(self, target: Any) -> dict[str, Any]:
        log_z = self.log_z_estimate()
        return {
            "log_z": log_z.value,
            "log_z_se": log_z.se,
            "log_z_samples": log_z.samples,
            "log_z_estimator": self.log_z_estimator.estimate_kind,
        }

    def evaluation_grid(self, target: Any) -> tuple[Tensor, float] | None:
        """The grid log Z is computed on, where the estimator has one (quadrature): grid
        metrics then compare the truth with exactly the normalised density reported."""
        return self.log_z_estimator.evaluation_grid()

    def vectorization_problem(self) -> str | None:
        if not self.method.stackable:
            return f"trainer.vectorize=true cannot stack method {self.method_name} (own draws)"
        if not self.log_z_estimator.deterministic:
            return "trainer.vectorize=true needs a deterministic log Z (log_z=quadrature, d <= 2)"
        return None

    MEMO_TENSORS = 4  # evaluation tensors whose energies are kept (the grid, val, test)

    def _memo(self) -> dict:
        """What is computed once per pinned emission: an evaluation asks for log Z and for the
        energy of its grid several times (the same grid log Z is computed on); a new pin
        (a new emission object) starts it afresh."""
        params = self._eval_params()
        memo = self.__dict__.setdefault("_pinned_memo", {})
        if memo.get("params") is not params:
            memo.clear()
            memo["params"], memo["energies"] = params, {}
        return memo

    def _pinned_energy(self, x: Tensor) -> Tensor:
        """E(x) under the pinned weights; without gradients, remembered for the same tensor."""
        if torch.is_grad_enabled() and (x.requires_grad or self.method.pinned is None):
            return icnn.energy(self._eval_params(), x, self.spec)
        energies = self._memo()["energies"]
        hit = energies.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        value = icnn.energy(self._eval_params(), x, self.spec)
        if not value.requires_grad:
            if len(energies) >= self.MEMO_TENSORS:
                energies.pop(next(iter(energies)))
            energies[id(x)] = (x, value)
        return value

    def _eval_params(self) -> dict[str, Tensor]:
        if self.method.pinned is None:
            raise RuntimeError("evaluation needs a pinned emission: call model.pin(pool)")
        return self.method.pinned

    def _energy_fn(self, params: dict[str, Tensor]):
        return lambda y: icnn.energy(params, y, self.spec)

    def _frozen_energy_fn(self, params: dict[str, Tensor]):
        """E under these weights, held constant (a sampler's loss must not train the EBM)."""
        frozen = {k: v.detach() for k, v in params.items()}
        return lambda y: icnn.energy(frozen, y, self.spec)
