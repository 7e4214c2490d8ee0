"""Weibull(scale, concentration >= 1): log-concave, with exact density and entropy."""

import torch
import torch.distributions as D

from icnn_bench.targets.univariate import Univariate


def weibull(scale: float = 1.0, concentration: float = 2.0) -> Univariate:
    dist = D.Weibull(torch.tensor(scale), torch.tensor(concentration))
    return Univariate("weibull", dist, box=(0.0, 6.0 * scale), entropy=float(dist.entropy()))
