"""Metrics of a trained model under its evaluation (pinned) emission."""

from __future__ import annotations

import math
from typing import Any

import torch

from icnn_bench.metrics import grid_divergences, window_grid, window_tv
from icnn_bench.models.base import DensityModel
from icnn_bench.targets import Split, Target


class EvaluationPool:
    """What a batch-conditioned method (the lift) pools for its evaluation emission:
    trainer.eval_pool = split (the whole training split), n (its first n rows) or batch (a
    fresh random batch of trainer.eval_batch at every evaluation: target draws where the
    target can sample, else random training rows; as the paper authors' code evaluates)."""

    FINAL = -1  # the index of the final evaluation's batch

    def __init__(self, settings: Any, split: Split, target: Target, seed: int) -> None:
        self.choice, self.size = settings.eval_pool, settings.eval_batch
        self.train, self.target, self.seed = split.train, target, seed

    def draw(self, index: int) -> torch.Tensor:
        """The pool of evaluation number `index` (0, 1, ...; FINAL for the final metrics)."""
        if self.choice == "split":
            return self.train
        if self.choice != "batch":
            return self.train[: self.choice]
        seed = 5_000_011 + 1_000_003 * self.seed + (index % 1_000_003)  # one per evaluation
        if self.target is not None and self.target.can_sample:
            return self.target.sample(self.size, seed=seed).to(self.train.device)
        rows = torch.randint(
            self.train.shape[0], (self.size,), generator=torch.Generator().manual_seed(seed)
        )
        return self.train[rows.to(self.train.device)]


@torch.no_grad()
def validation_metrics(
    model: DensityModel, split: Split, pool: torch.Tensor, target: Target | None
) -> dict[str, float]:
    """At an evaluation, with the emission pinned on `pool`: the validation NLL and, where
    the truth is known on the model's grid (d <= 2), the grid KL to it (exact up to the grid,
    free of the validation split's noise)."""
    model.pin(pool)
    try:
        own = model.own_metrics(split.val, target)
        if own is not None:
            return {f"val_{key}": value for key, value in own.items()}
        out = {"val_nll": float(-model.log_prob(split.val).mean())}
        grid = model.evaluation_grid(target) if target is not None else None
        if grid is not None:
            nodes, log_cell = grid
            truth = target.log_prob(nodes.cpu())
            if truth is not None:
                fitted = model.log_prob(nodes).cpu()
                out["kl"] = grid_divergences(truth, fitted, log_cell)["kl"]
        return out
    finally:
        model.unpin()


@torch.no_grad()
def evaluate(model: DensityModel, split: Split, target: Target) -> dict[str, Any]:
    """Final metrics (the model already pinned): NLLs, and distances to the truth when known;
    a model with its own metrics (an OT map), those on the test and validation rows."""
    info = model.evaluation_info(target)
    own = model.own_metrics(split.test, target)
    if own is not None:
        val = model.own_metrics(split.val, target) or {}
        return {
            **own,
            **{f"val_{key}": value for key, value in val.items()},
            **info,
            "dead_frac": model.dead_fraction(),
        }
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
    window = target.authors_window() if target.dim == 1 else None
    if window is not None:  # the paper authors' TV, to compare with their numbers
        nodes = window_grid(window)
        truth = target.log_prob(nodes)
        if truth is not None:
            out["tv_authors"] = window_tv(
                truth, model.log_prob(nodes.to(model.device)).cpu(), window
            )
    grid = model.evaluation_grid(target)
    if grid is not None:
        nodes, log_cell = grid
        fitted = model.log_prob(nodes).cpu()
        truth = target.log_prob(nodes.cpu())
        if truth is not None:
            out.update(grid_divergences(truth, fitted, log_cell))
    return out


VALIDATION_KEYS = ("val_nll", "val_l2_uvp")


def validation_metric(row: dict[str, Any]) -> dict[str, float] | None:
    """The one validation number of an evaluation row or result, by name: the NLL of a
    density, the L2-UVP of an OT map (what a sweeper minimises and a progress bar shows)."""
    for key in VALIDATION_KEYS:
        if row.get(key) is not None:
            return {key: float(row[key])}
    return None


def validation_value(row: dict[str, Any]) -> float | None:
    """The value of `validation_metric`, or None."""
    metric = validation_metric(row)
    return next(iter(metric.values())) if metric else None
