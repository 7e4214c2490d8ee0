"""Distances between a fitted density and the truth on a quadrature grid (exact up to it)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def grid_divergences(log_p: Tensor, log_q: Tensor, log_cell: float) -> dict[str, float]:
    """KL(p||q), total variation and Hellinger distance from log-densities on grid nodes."""
    log_p, log_q = log_p.double(), log_q.double()
    cell = math.exp(log_cell)
    p, q = log_p.exp(), log_q.exp()
    has_mass = p > 0
    kl_terms = torch.where(has_mass, p * (log_p - log_q), torch.zeros_like(p))
    kl = float(kl_terms.sum() * cell)
    tv = float(0.5 * (p - q).abs().sum() * cell)
    bhattacharyya = float(torch.exp(0.5 * (log_p + log_q)).nan_to_num(0.0).sum() * cell)
    hellinger = math.sqrt(max(0.0, 1.0 - bhattacharyya))
    return {"kl": kl, "tv": tv, "hellinger": hellinger}


AUTHORS_GRID = 8000  # points of the authors' TV grid, both window ends included


def window_tv(log_p: Tensor, log_q: Tensor, window: tuple[float, float]) -> float:
    """TV as the paper authors' code measures it: both log-densities on AUTHORS_GRID evenly
    spaced points over `window` (ends included, spacing (hi - lo) / (n - 1)), each
    exponentiated after subtracting its maximum and renormalised to sum * dx = 1, then
    0.5 * sum |p - q| * dx. Points where a log-density is -inf carry no mass."""
    lo, hi = window
    dx = (hi - lo) / (log_p.numel() - 1)
    p = torch.exp(log_p.double() - log_p.double().max())
    q = torch.exp(log_q.double() - log_q.double().max())
    p, q = p / (p.sum() * dx), q / (q.sum() * dx)
    return float(0.5 * (p - q).abs().sum() * dx)


def window_grid(window: tuple[float, float]) -> Tensor:
    lo, hi = window
    return torch.linspace(lo, hi, AUTHORS_GRID, dtype=torch.float64).float().reshape(-1, 1)
