"""Metrics of a trained model under its evaluation (pinned) emission."""

from __future__ import annotations

import math
from typing import Any

import torch

from icnn_bench.metrics import grid_divergences
from icnn_bench.models.base import DensityModel
from icnn_bench.targets import Split, Target


@torch.no_grad()
def validation_nll(model: DensityModel, split: Split, pool: torch.Tensor) -> float:
    """Mean validation NLL with the emission pinned on `pool` (the loop's evaluations)."""
    model.pin(pool)
    try:
        return float(-model.log_prob(split.val).mean())
    finally:
        model.unpin()


@torch.no_grad()
def evaluate(model: DensityModel, split: Split, target: Target) -> dict[str, Any]:
    """Final metrics (the model already pinned): NLLs, and distances to the truth when known."""
    info = model.evaluation_info(target)
    test_lp = model.log_prob(split.test)
    sample_se = float(test_lp.std() / math.sqrt(test_lp.numel()))
    out: dict[str, Any] = {
        "test_nll": float(-test_lp.mean()),
        # test-sample noise and, for importance sampling, the log Z Monte Carlo error
        "test_nll_se": math.hypot(sample_se, info.get("log_z_se", 0.0)),
        "val_nll": float(-model.log_prob(split.val).mean()),
        **info,
        "dead_frac": model.dead_fraction(),
    }
    out["test_bits_per_dim"] = out["test_nll"] / (target.dim * math.log(2))
    entropy = target.entropy()
    if entropy is not None:
        out["entropy"] = entropy
        out["kl_mc"] = out["test_nll"] - entropy
    grid = model.evaluation_grid(target)
    if grid is not None:
        nodes, log_cell = grid
        fitted = model.log_prob(nodes).cpu()
        truth = target.log_prob(nodes.cpu())
        if truth is not None:
            out.update(grid_divergences(truth, fitted, log_cell))
    return out
