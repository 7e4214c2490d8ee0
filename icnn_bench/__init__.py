"""icnn-bench: compare PGD, softplus and the lift for training input-convex neural networks."""

from __future__ import annotations

from pathlib import Path

from icnn_bench.api import TrainedModel, load_curves, load_run, load_sweep
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.models.base import DensityModel
from icnn_bench.models.ebm import EnergyModel

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
