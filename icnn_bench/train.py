"""One run: build -> train -> evaluate -> write the run folder. Plain dicts in, no Hydra."""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from icnn_bench import io
from icnn_bench.build import (
    TrainerSettings,
    energy_model_from_config,
    resolve_device,
    target_from_config,
)
from icnn_bench.diagnostics import grad_norm
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.metrics import grid_divergences
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.objectives.importance import NonFiniteWeights
from icnn_bench.objectives.quadrature import QuadratureLogZ
from icnn_bench.sampling import mala
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.files import FileSink
from icnn_bench.targets import Split, Target

CONFIG = "config.yaml"
WEIGHTS = "weights.pt"
DENSITY = "density.csv"
SAMPLES = "samples.png"
ERROR_LOG = "error.txt"


@dataclass
class LoopOutcome:
    status: str  # ok | diverged
    steps: int
    diverged_step: int | None = None
    error: str | None = None


def run(config: dict[str, Any], run_dir: Path, sinks: list[Sink] | None = None) -> dict[str, Any]:
    """Train and evaluate one (target, model, method, seed); always leaves a result.json."""
    run_dir = Path(run_dir)
    io.write_text(run_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
    sinks = [FileSink(run_dir), *(sinks or [])]
    result: dict[str, Any] = {
        "target": config.get("target", {}).get("name"),
        "model": config.get("model", {}).get("name"),
        "method": config.get("method", {}).get("name"),
        "seed": config.get("seed"),
        "status": "failed",
    }
    started = time.perf_counter()
    try:
        result.update(_run(config, run_dir, sinks, result))
    except (ConfigError, DataError) as error:
        result.update(status="failed", error=str(error))
    except Exception as error:  # recorded, so that a sweep goes on and nothing is lost
        io.write_text(run_dir / ERROR_LOG, traceback.format_exc())
        result.update(
            status="failed",
            error=f"{type(error).__name__}: {error} (traceback in {ERROR_LOG})",
        )
    result["wall_s"] = time.perf_counter() - started  # build + train + evaluate + write
    for key in ("test_nll", "kl", "steps", "steps_per_s", "error"):
        result.setdefault(key, None)  # the contract's keys are always present
    for sink in sinks:
        sink.finish(result)
    return result


def _run(
    config: dict[str, Any], run_dir: Path, sinks: list[Sink], info: dict[str, Any]
) -> dict[str, Any]:
    seed = config.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be a non-negative integer")
    device = resolve_device(config.get("device", "auto"))
    settings = TrainerSettings.from_dict(config["trainer"])
    data_cfg = config["data"]
    target = target_from_config(config["target"])
    if hasattr(target, "use_cache_dir"):  # e.g. a trained encoder, shared by a sweep's runs
        target.use_cache_dir(run_dir.parent / ".cache")
    split = target.split(
        seed=data_cfg.get("seed", seed),
        n_train=data_cfg["n_train"],
        n_val=data_cfg["n_val"],
        n_test=data_cfg["n_test"],
    )
    if settings.batch_size > split.train.shape[0]:
        raise ConfigError(
            f"trainer.batch_size={settings.batch_size} is larger than the training split "
            f"(data.n_train={split.train.shape[0]})"
        )
    model = energy_model_from_config(config, target, seed, train=split.train).to(device)
    split = Split(*(part.to(device) for part in (split.train, split.val, split.test)))

    for sink in sinks:
        sink.start(info, settings.steps)
    started = time.perf_counter()
    outcome = train_loop(model, split, settings, seed, sinks)
    train_s = time.perf_counter() - started

    out: dict[str, Any] = {
        "status": outcome.status,
        "steps": outcome.steps,
        "train_s": train_s,
        "steps_per_s": outcome.steps / train_s if train_s > 0 else math.nan,
        "device": str(device),
        "dim": target.dim,
        "n_params": sum(p.numel() for p in model.trainable_parameters()),
    }
    if outcome.status != "ok":
        out.update(diverged_step=outcome.diverged_step, error=outcome.error)
        return out
    model.source.pin(split.train)
    out.update(evaluate(model, split, target))
    _save(model, run_dir, target, split)
    return out


def train_loop(
    model: EnergyModel, split: Split, settings: TrainerSettings, seed: int, sinks: list[Sink]
) -> LoopOutcome:
    """Adam on mean E(batch) + log Z with clipping; evaluates every `eval_every` steps."""
    trainable = model.trainable_parameters()
    optimizer = make_adam(trainable, settings)
    max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf
    batches = torch.Generator(device=split.train.device).manual_seed(seed)
    n_train = split.train.shape[0]
    losses = torch.empty(settings.steps)
    last_logged = 0
    constrained_grad = math.nan

    def log_eval(step: int) -> None:
        nonlocal last_logged
        window = losses[last_logged:step]
        row = {
            "step": step,
            "train_loss": float(window.mean()) if step > last_logged else math.nan,
            "val_nll": validation_nll(model, split),
            "dead_frac": model.source.dead_fraction(),
            "grad_norm": constrained_grad,
        }
        steps = list(range(last_logged + 1, step + 1))
        for sink in sinks:
            if steps:
                sink.log_train_losses(steps, window.tolist())
            sink.log_eval(row)
        last_logged = step

    step = 0
    try:
        log_eval(0)
        for step in range(1, settings.steps + 1):
            index = torch.randint(
                n_train, (settings.batch_size,), generator=batches, device=split.train.device
            )
            loss = model.nll_loss(split.train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            evaluating = step % settings.eval_every == 0 or step == settings.steps
            if evaluating:
                constrained_grad = grad_norm(model.source.constrained_parameters())
            total_norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm, foreach=True)
            if not bool(torch.isfinite(loss)):
                return _diverged(step, "non-finite loss", log_eval, last_logged)
            if not bool(torch.isfinite(total_norm)):
                return _diverged(step, "non-finite gradient", log_eval, last_logged)
            optimizer.step()
            model.source.project_()
            losses[step - 1] = loss.detach()
            if evaluating:
                log_eval(step)
    except NonFiniteWeights as error:
        return _diverged(max(step, 1), str(error), log_eval, last_logged)
    return LoopOutcome(status="ok", steps=settings.steps)


def make_adam(params: list[torch.nn.Parameter], settings: TrainerSettings) -> torch.optim.Adam:
    """Fused Adam where this torch build has it: the lift's step is bound by optimizer traffic."""
    try:
        return torch.optim.Adam(
            params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def _diverged(step: int, cause: str, log_eval, last_logged: int) -> LoopOutcome:
    if step - 1 > last_logged:
        with contextlib.suppress(NonFiniteWeights):
            log_eval(step - 1)  # keep the curve up to the last finite step
    return LoopOutcome(status="diverged", steps=step - 1, diverged_step=step, error=cause)


@torch.no_grad()
def validation_nll(model: EnergyModel, split: Split) -> float:
    model.source.pin(split.train)
    try:
        return float(-model.log_prob(split.val).mean())
    finally:
        model.source.unpin()


@torch.no_grad()
def evaluate(model: EnergyModel, split: Split, target: Target) -> dict[str, Any]:
    """Final metrics under the pinned emission: NLLs, and distances to the truth when known."""
    log_z = model.log_z_estimate()
    test_lp = model.log_prob(split.test)
    sample_se = float(test_lp.std() / math.sqrt(test_lp.numel()))
    out: dict[str, Any] = {
        "test_nll": float(-test_lp.mean()),
        # test-sample noise and, for importance sampling, the log Z Monte Carlo error
        "test_nll_se": math.hypot(sample_se, log_z.se),
        "val_nll": float(-model.log_prob(split.val).mean()),
        "log_z": log_z.value,
        "log_z_se": log_z.se,
        "log_z_samples": log_z.samples,
        "log_z_estimator": model.log_z_estimator.estimate_kind,
        "dead_frac": model.source.dead_fraction(),
    }
    entropy = target.entropy()
    if entropy is not None:
        out["entropy"] = entropy
        out["kl_mc"] = out["test_nll"] - entropy
    if isinstance(model.log_z_estimator, QuadratureLogZ):
        nodes, log_cell = model.log_z_estimator.grid(training=False)
        truth = target.log_prob(nodes.cpu())
        if truth is not None:
            out.update(grid_divergences(truth, model.log_prob(nodes).cpu(), log_cell))
    return out


def _save(model: EnergyModel, run_dir: Path, target: Target, split: Split) -> None:
    pinned = {k: v.cpu() for k, v in model.source.pinned.items()}
    io.save_torch(
        run_dir / WEIGHTS,
        {
            "source": model.source.state_dict(),
            "pinned": pinned,
            "log_z": model.log_z_estimator.state_dict(),  # e.g. the fitted proposal
        },
    )
    if target.dim == 1:
        io.write_csv(run_dir / DENSITY, density_table(model, target))
    if hasattr(target, "decode"):
        write_decoded_samples(model, target, split, run_dir)


def write_decoded_samples(model: EnergyModel, target: Target, split: Split, run_dir: Path) -> None:
    """Latent targets: MALA samples of the fitted EBM, decoded next to real test images."""
    from icnn_bench.report.figures import digits_figure

    generator = torch.Generator(device=split.train.device).manual_seed(0)
    start = split.train[:16]
    samples = mala(model.energy, start, steps=400, step_size=0.02, generator=generator)
    title = f"{target.name} d={target.dim}, {model.source.name}: MALA 400 steps from train rows"
    digits_figure(target.decode(split.test[:16]), target.decode(samples), run_dir / SAMPLES, title)


@torch.no_grad()
def density_table(model: EnergyModel, target: Target, points: int = 600) -> pd.DataFrame:
    ((lo, hi),) = target.box()
    x = torch.linspace(lo, hi, points).reshape(-1, 1)
    device = next(iter(model.source.pinned.values())).device
    fitted = model.log_prob(x.to(device)).cpu().exp()
    truth = target.log_prob(x)
    table = {"x": x[:, 0].numpy(), "model": fitted.numpy()}
    if truth is not None:
        table["target"] = truth.exp().numpy()
    return pd.DataFrame(table)
