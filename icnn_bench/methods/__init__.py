"""Weight sources (constraint methods) by name."""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor

from icnn_bench.errors import ConfigError
from icnn_bench.methods.base import WeightSource
from icnn_bench.methods.lift import LiftWeights
from icnn_bench.methods.pgd import ProjectedWeights
from icnn_bench.methods.softplus import SoftplusWeights
from icnn_bench.models.icnn import ICNNSpec

METHODS: dict[str, type[WeightSource]] = {
    "pgd": ProjectedWeights,
    "softplus": SoftplusWeights,
    "lift": LiftWeights,
    # the lift with one ingredient deleted; their configs set the switch
    "lift_noslack": LiftWeights,
    "lift_nocond": LiftWeights,
    "lift_nostoch": LiftWeights,
}


def build_method(
    name: str, spec: ICNNSpec, init: dict[str, Tensor], **options: Any
) -> WeightSource:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    if "body" in options:
        options["body"] = tuple(options["body"])
    if "pinned_pool" not in inspect.signature(METHODS[name]).parameters:
        options.pop("pinned_pool", None)  # an evaluation setting only the lift reads
    source = METHODS[name](spec, init, **options)
    source.name = name
    return source


__all__ = ["METHODS", "WeightSource", "build_method"]
