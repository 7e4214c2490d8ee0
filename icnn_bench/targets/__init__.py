"""Targets by name."""

from __future__ import annotations

from typing import Any

from icnn_bench.targets.base import Split, Target, TargetError
from icnn_bench.targets.digits import digits_latents
from icnn_bench.targets.synthetic import SYNTHETIC
from icnn_bench.targets.tabular import TABULAR
from icnn_bench.targets.toys2d import TOYS_2D
from icnn_bench.targets.univariate import UNIVARIATE

TARGETS = {
    **UNIVARIATE,
    **SYNTHETIC,
    "digits_latents": digits_latents,
    **TOYS_2D,
    **TABULAR,
}


def build_target(name: str, params: dict[str, Any] | None = None) -> Target:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; choose one of: {', '.join(sorted(TARGETS))}")
    params = dict(params or {})
    try:
        return TARGETS[name](**params)
    except TypeError as error:  # an unknown parameter name
        raise TargetError(f"target {name}: {error}") from None


__all__ = ["TARGETS", "Split", "Target", "TargetError", "build_target"]
