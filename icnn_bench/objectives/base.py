"""What every log Z estimator reports at evaluation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LogZEstimate:
    value: float
    se: float  # Monte Carlo standard error (0 for quadrature, which is exact up to grid error)
    samples: int  # proposal draws, or grid nodes for quadrature
