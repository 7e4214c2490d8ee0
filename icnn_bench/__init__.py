"""icnn-bench: compare PGD, softplus and the lift for training input-convex neural networks."""

from __future__ import annotations

from pathlib import Path

from icnn_bench.errors import ConfigError, DataError

_LAZY = {  # imported when first asked for: a run needs none of them
    "TrainedModel": "icnn_bench.api",
    "load_run": "icnn_bench.api",
    "load_sweep": "icnn_bench.api",
    "load_curves": "icnn_bench.api",
    "DensityModel": "icnn_bench.models.base",
    "EnergyModel": "icnn_bench.models.ebm",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'icnn_bench' has no attribute {name!r}")


__version__ = "0.1.0"


def run(config: dict, run_dir: str | Path) -> dict:
    """Train and evaluate one run from a plain config dict into `run_dir` (no Hydra)."""
    from icnn_bench.runner import run as run_one

    return run_one(config, Path(run_dir))


__all__ = [
    "ConfigError",
    "DataError",
    "DensityModel",
    "EnergyModel",
    "TrainedModel",
    "__version__",
    "load_curves",
    "load_run",
    "load_sweep",
    "run",
]
