"""Diagnostics logged at every evaluation: gradient norms (dead fraction lives on the source)."""

from __future__ import annotations

import math

import torch
from torch import nn


def grad_norm(parameters: list[nn.Parameter]) -> float:
    """Euclidean norm of the gradients of `parameters` (nan when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return math.nan
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
