from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from icnn_bench.models.icnn import ICNNSpec, init_params

TINY: dict[str, Any] = {
    "seed": 0,
    "device": "cpu",
    "data": {"n_train": 600, "n_val": 200, "n_test": 400, "seed": 0},
    "target": {"name": "gaussian", "params": {"loc": 0.0, "scale": 1.0}},
    "model": {
        "name": "icnn",
        "width": 16,
        "depth": 3,
        "alpha": 0.02,
        "init": "folded_normal",
    },
    "log_z": {"estimator": "quadrature", "train_nodes": 128, "eval_nodes": 1000},
    "method": {"name": "pgd"},
    "trainer": {"steps": 20, "batch_size": 64, "lr": 1e-2, "grad_clip": 1.0, "eval_every": 10},
}

LIFT_OPTIONS = {"body": [16, 16, 24], "pool_norm": True, "slack_init": -2.0, "emit": "all"}


@pytest.fixture
def tiny_config():
    """A run config small enough to train in well under a second."""

    def make(method: str = "pgd", **sections: Any) -> dict[str, Any]:
        config = copy.deepcopy(TINY)
        config["method"] = {"name": method, **(LIFT_OPTIONS if method == "lift" else {})}
        for key, value in sections.items():
            if key == "log_z":  # one estimator's settings replace another's
                config[key] = dict(value)
            elif isinstance(value, dict):
                config[key].update(value)
            else:
                config[key] = value
        return config

    return make


@pytest.fixture
def spec() -> ICNNSpec:
    return ICNNSpec(dim=2, width=12, depth=3, alpha=0.02)


@pytest.fixture
def init(spec):
    return init_params(spec, "folded_normal", torch.Generator().manual_seed(0))
