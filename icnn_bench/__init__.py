"""icnn-bench: compare PGD, softplus and the lift for training input-convex neural networks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from icnn_bench.errors import ConfigError, DataError
from icnn_bench.models.base import DensityModel
from icnn_bench.models.ebm import EnergyModel

__version__ = "0.1.0"


def load_run(run_dir: str | Path, config_dir: str | Path | None = None) -> DensityModel:
    """The trained model of a finished run, with `log_prob(x)` (and `energy(x)` for EBMs).

    Evaluation uses the run's pinned emission (for the lift: the summary pooled over the
    training split), so the model is one fixed, normalised convex energy. `config_dir`: the
    folder of a method or target of your own (as given to --config-dir), to import it from.
    """
    from icnn_bench import registry
    from icnn_bench.build import model_from_config, target_from_config

    if config_dir is not None:
        registry.add_search_dir(config_dir)
    run_dir = Path(run_dir)
    result_path, weights_path = run_dir / "result.json", run_dir / "weights.pt"
    for path in (run_dir / "config.yaml", result_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; is {run_dir} a finished run folder?")
    status = json.loads(result_path.read_text()).get("status")
    if status != "ok" or not weights_path.exists():
        raise FileNotFoundError(f"{run_dir} holds no trained weights (run status: {status})")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    target = target_from_config(config["target"])
    model = model_from_config(config, target, config["seed"])
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    model.set_pinned_state(state["pinned"])
    return model.eval()


def run(config: dict, run_dir: str | Path) -> dict:
    """Train and evaluate one run from a plain config dict into `run_dir` (no Hydra)."""
    from icnn_bench.runner import run as run_one

    return run_one(config, Path(run_dir))


__all__ = [
    "ConfigError",
    "DataError",
    "DensityModel",
    "EnergyModel",
    "__version__",
    "load_run",
    "run",
]
