"""The Python API: a finished run as a model to evaluate, a sweep as tidy data frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import Tensor

from icnn_bench.errors import ConfigError, DataError
from icnn_bench.models.base import DensityModel
from icnn_bench.run_folder import CONFIG, METRICS, RESULT, WEIGHTS, read_result, read_table


class TrainedModel:
    """A finished run's model under its evaluation (pinned) emission, with the run's config,
    result and target. Inputs may be tensors or numpy arrays of any float dtype, shaped
    (n, d), or (n,) for a 1-D model; what comes back is of the input's kind: a numpy array
    in gives a numpy array out, in the input's dtype (computed in float32), shaped (n,) for
    densities and energies, (n, d) for scores. Everything else the model has is reachable."""

    def __init__(self, model: DensityModel, config: dict, result: dict, target: Any) -> None:
        self.model, self.config, self.result, self.target = model, config, result, target

    @property
    def dim(self) -> int:
        return int(self.target.dim)

    def log_prob(self, x, grad: bool = False):
        """Normalised log-density, (n,). grad=True (tensors only) keeps the graph to x."""
        points = self._input(x, grad)
        if grad:
            return self.model.differentiable_log_prob(points).reshape(-1)
        return self._output(self.model.log_prob(points).reshape(-1), x)

    def score(self, x):
        """grad_x log p(x), (n, d)."""
        points = self._input(x, grad=True)
        (grad,) = torch.autograd.grad(self.model.differentiable_log_prob(points).sum(), points)
        return self._output(grad, x)

    def energy(self, x):
        """E(x) under the evaluation weights (EBMs), (n,)."""
        if not hasattr(self.model, "energy"):
            raise AttributeError(
                f"a {self.config['model']['name']} run has no energy; use log_prob"
            )
        with torch.no_grad():
            return self._output(self.model.energy(self._input(x, grad=False)).reshape(-1), x)

    @staticmethod
    def _output(value: Tensor, like: Any):
        """numpy in, numpy out (in the input's float dtype); a tensor otherwise."""
        if isinstance(like, np.ndarray):
            dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
            return value.detach().cpu().numpy().astype(dtype)
        return value

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n draws: by inverting a flow, or by MALA chains for an EBM."""
        generator = torch.Generator().manual_seed(seed)
        return self.model.sample(n, generator)

    def __getattr__(self, name: str) -> Any:  # the model's own attributes and methods
        return getattr(self.__dict__["model"], name)

    def _input(self, x, grad: bool) -> Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        x = torch.as_tensor(x)
        if not torch.is_floating_point(x):
            x = x.float()
        x = x.to(dtype=torch.float32, device=self.model.device)
        if x.dim() == 1 and self.dim == 1:
            x = x[:, None]
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"expected points of shape (n, {self.dim})"
                + (" or (n,)" if self.dim == 1 else "")
                + f"; got {tuple(x.shape)}"
            )
        return x.detach().requires_grad_(grad)


def load_run(
    run_dir: str | Path, config_dir: str | Path | None = None, device: str = "cpu"
) -> TrainedModel:
    """The trained model of a finished run, with `log_prob(x)` (and `energy(x)` for EBMs).

    Evaluation uses the run's pinned emission (for the lift: the summary pooled over the
    training split), so the model is one fixed, normalised convex energy. `config_dir`: the
    folder of a method or target of your own (as given to --config-dir), to import it from.
    `device`: where the model lives (cpu, cuda, cuda:N, auto); inputs are moved there.
    """
    from icnn_bench import registry
    from icnn_bench.build import model_from_config, target_from_config
    from icnn_bench.devices import resolve_device

    if config_dir is not None:
        registry.add_search_dir(config_dir)
    run_dir = Path(run_dir)
    result_path, weights_path = run_dir / RESULT, run_dir / WEIGHTS
    config_path = run_dir / CONFIG
    for path in (config_path, result_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; is {run_dir} a finished run folder?")
    result = read_result(result_path)
    status = result.get("status") if result is not None else "unreadable"
    if status != "ok" or not weights_path.exists():
        raise FileNotFoundError(f"{run_dir} holds no trained weights (run status: {status})")
    config = _run_config(config_path)
    try:
        target = target_from_config(config["target"])
        model = model_from_config(config, target, config["seed"])
    except (ConfigError, KeyError, TypeError) as error:
        raise DataError(f"{config_path} does not describe a model this version builds "
                        f"({type(error).__name__}: {error})") from None  # fmt: skip
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, empty, random bytes, another program's pickle
        raise DataError(f"{weights_path} cannot be read ({_first_line(error)})") from None
    if not isinstance(state, dict) or not {"model", "pinned"} <= set(state):
        raise DataError(f"{weights_path} is not an icnn-bench weights file")
    try:
        model.load_state_dict(state["model"])
        model.set_pinned_state(state["pinned"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{weights_path} does not fit {config_path} "
                        f"({_first_line(error)})") from None  # fmt: skip
    return TrainedModel(model.to(resolve_device(device)).eval(), config, result, target)


# settings renamed since a run folder may have been written: old key -> new key
RENAMED = {("method", "pinned_pool"): ("trainer", "eval_pool")}


def _run_config(path: Path) -> dict[str, Any]:
    """A run's config.yaml, checked and brought up to this version's keys (RENAMED)."""
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read ({type(error).__name__})") from None
    if not isinstance(config, dict) or not all(
        isinstance(config.get(k), dict) for k in ("target", "model", "method")
    ):
        raise DataError(f"{path} is not a run's config (no target, model and method)")
    for (group, key), (new_group, new_key) in RENAMED.items():
        if key in config[group]:
            config.setdefault(new_group, {}).setdefault(new_key, config[group].pop(key))
    return config


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def load_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run folder below `sweep_dir` (complete or not): result.json's fields,
    the run folder, and each setting the sweep varied as a typed column of its own
    (`trainer.lr` a float, `model.depth` an int), next to `method` and `target` as named."""
    from icnn_bench.report import label_variants
    from icnn_bench.report.collect import collect_runs

    runs = collect_runs(Path(sweep_dir))
    if runs.empty:
        raise FileNotFoundError(f"no run folders below {sweep_dir}")
    return label_variants(runs)


def load_curves(sweep_dir: str | Path) -> pd.DataFrame:
    """Every evaluation row of every run, long form: run_dir, target, method, seed, the
    swept settings, step, metric, value."""
    runs = load_sweep(sweep_dir)
    swept = [c for c in runs.columns if "." in c]
    frames = []
    for run in runs.to_dict("records"):
        curve = read_table(Path(run["run_dir"]), METRICS)
        if curve is None or "step" not in curve or curve.empty:
            continue
        long = curve.melt(id_vars=["step"], var_name="metric").dropna(subset=["value"])
        long["target"], long["method"] = run["target_name"], run["method_name"]
        for key in ("run_dir", "seed", *swept):
            long[key] = run.get(key)
        frames.append(long)
    columns = ["run_dir", "target", "method", "seed", *swept, "step", "metric", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
