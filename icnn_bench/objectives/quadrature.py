"""log Z by quadrature on the target's box: exact up to grid error, for d <= 2."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.errors import ConfigError
from icnn_bench.objectives.base import LogZEstimate


def midpoint_grid(box: list[tuple[float, float]], nodes: int) -> tuple[Tensor, float]:
    """About `nodes` midpoint nodes in all (nodes^(1/d) per axis) and log of a cell's volume."""
    per_axis = max(2, round(nodes ** (1.0 / len(box))))
    axes, log_cell = [], 0.0
    for lo, hi in box:
        if not hi > lo:
            raise ConfigError(f"quadrature box ({lo}, {hi}) is empty")
        h = (hi - lo) / per_axis
        axes.append(lo + h * (torch.arange(per_axis, dtype=torch.float64) + 0.5))
        log_cell += math.log(h)
    mesh = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
    return points.float(), log_cell


class QuadratureLogZ(nn.Module):
    """log Z = log sum_i exp(-E(x_i)) * cell, on a coarse grid in training, a fine one at eval."""

    estimate_kind = "quadrature"

    def __init__(
        self, box: list[tuple[float, float]], train_nodes: int = 1024, eval_nodes: int = 8000
    ) -> None:
        super().__init__()
        if len(box) > 2:
            raise ConfigError(f"quadrature log Z needs d <= 2, the target has d = {len(box)}")
        for key, n in (("train_nodes", train_nodes), ("eval_nodes", eval_nodes)):
            checks.integer(f"model.log_z.{key}", n, minimum=2)
        train_grid, self.train_log_cell = midpoint_grid(box, train_nodes)
        eval_grid, self.eval_log_cell = midpoint_grid(box, eval_nodes)
        self.register_buffer("train_grid", train_grid, persistent=False)
        self.register_buffer("eval_grid", eval_grid, persistent=False)

    def grid(self, training: bool) -> tuple[Tensor, float]:
        if training:
            return self.train_grid, self.train_log_cell
        return self.eval_grid, self.eval_log_cell

    def forward(self, energy_fn: Callable[[Tensor], Tensor], training: bool) -> Tensor:
        nodes, log_cell = self.grid(training)
        return torch.logsumexp(-energy_fn(nodes), dim=0) + log_cell

    @torch.no_grad()
    def estimate(self, energy_fn: Callable[[Tensor], Tensor]) -> LogZEstimate:
        """The evaluation-grid value; exact up to grid error, so no Monte Carlo error."""
        return LogZEstimate(float(self(energy_fn, training=False)), 0.0, self.eval_grid.shape[0])
