"""log Z by quadrature on the target's box: exact up to grid error, for d <= 2.

Training uses a cheap rule (composite Gauss-Legendre by default), evaluation a fine
midpoint grid, which also carries the grid metrics (KL, TV, Hellinger)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from icnn_bench import checks
from icnn_bench.errors import ConfigError
from icnn_bench.log_z.base import LogZEstimate, LogZEstimator

RULES = ("gauss_legendre", "midpoint")  # the training rule; evaluation is always midpoint


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


def gauss_legendre_grid(
    box: list[tuple[float, float]], nodes: int, order: int = 16
) -> tuple[Tensor, Tensor]:
    """Composite Gauss-Legendre rule with about `nodes` nodes in all: per axis, equal panels
    of `order` nodes each. Returns the nodes and the log of each node's weight.

    Panels keep the nodes evenly spread (one wide rule crowds them at the ends), and within a
    panel the rule is exact to degree 2*order-1: on the 120 trained paper_1d energies, 8 panels
    of 16 nodes gave log Z within 4e-5 of the 8000-point midpoint value."""
    per_axis = max(2, round(nodes ** (1.0 / len(box))))
    order = min(order, per_axis)
    panels = max(1, round(per_axis / order))
    unit_nodes, unit_weights = np.polynomial.legendre.leggauss(order)  # on [-1, 1]
    axes, log_weights = [], []
    for lo, hi in box:
        if not hi > lo:
            raise ConfigError(f"quadrature box ({lo}, {hi}) is empty")
        edges = np.linspace(lo, hi, panels + 1)
        half, centre = (edges[1:] - edges[:-1]) / 2, (edges[1:] + edges[:-1]) / 2
        axes.append(torch.as_tensor((centre[:, None] + half[:, None] * unit_nodes).reshape(-1)))
        log_weights.append(torch.as_tensor(np.log(half[:, None] * unit_weights).reshape(-1)))
    points = torch.stack([m.reshape(-1) for m in torch.meshgrid(*axes, indexing="ij")], -1)
    log_w = sum(m.reshape(-1) for m in torch.meshgrid(*log_weights, indexing="ij"))
    return points.float(), log_w.float()


class QuadratureLogZ(LogZEstimator):
    """log Z = log sum_i exp(-E(x_i)) * cell, on a coarse grid in training, a fine one at eval."""

    estimate_kind = "quadrature"
    deterministic = True

    def __init__(
        self,
        box: list[tuple[float, float]],
        train_nodes: int = 128,
        eval_nodes: int = 8000,
        train_rule: str = "gauss_legendre",
    ) -> None:
        super().__init__()
        if len(box) > 2:
            raise ConfigError(f"quadrature log Z needs d <= 2, the target has d = {len(box)}")
        for key, n in (("train_nodes", train_nodes), ("eval_nodes", eval_nodes)):
            checks.integer(f"log_z.{key}", n, minimum=2)
        checks.choice("log_z.train_rule", train_rule, RULES)
        if train_rule == "gauss_legendre":
            train_grid, train_log_w = gauss_legendre_grid(box, train_nodes)
        else:
            train_grid, log_cell = midpoint_grid(box, train_nodes)
            train_log_w = torch.full((train_grid.shape[0],), log_cell)
        eval_grid, self.eval_log_cell = midpoint_grid(box, eval_nodes)
        self.register_buffer("train_grid", train_grid, persistent=False)
        self.register_buffer("train_log_weights", train_log_w, persistent=False)
        self.register_buffer("eval_grid", eval_grid, persistent=False)

    def evaluation_grid(self) -> tuple[Tensor, float]:
        """The evaluation grid (midpoint: equal cells) and the log of a cell's volume."""
        return self.eval_grid, self.eval_log_cell

    def forward(self, energy_fn: Callable[[Tensor], Tensor], training: bool) -> Tensor:
        if training:
            return torch.logsumexp(self.train_log_weights - energy_fn(self.train_grid), dim=0)
        return torch.logsumexp(-energy_fn(self.eval_grid), dim=0) + self.eval_log_cell

    @torch.no_grad()
    def estimate(self, energy_fn: Callable[[Tensor], Tensor]) -> LogZEstimate:
        """The evaluation-grid value; exact up to grid error, so no Monte Carlo error."""
        return LogZEstimate(float(self(energy_fn, training=False)), 0.0, self.eval_grid.shape[0])
