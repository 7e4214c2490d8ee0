"""One run: build -> train -> evaluate -> write the run folder. Plain dicts in, no Hydra."""

from __future__ import annotations

import contextlib
import json
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import Tensor

from icnn_bench import checks, io
from icnn_bench.build import (
    RESUME,
    TrainerSettings,
    method_label,
    model_from_config,
    resolve_device,
    target_from_config,
)
from icnn_bench.checkpoint import (
    Checkpoints,
    first_difference,
    global_rng_state,
    open_checkpoints,
    set_global_rng_state,
)
from icnn_bench.diagnostics import ShoulderDwell, grad_norm, probe_cross_covariance
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.metrics import grid_divergences
from icnn_bench.models.base import DensityModel
from icnn_bench.models.cpflow import InversionError
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.objectives.importance import NonFiniteWeights
from icnn_bench.objectives.quadrature import QuadratureLogZ, midpoint_grid
from icnn_bench.sampling import mala
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.files import RESULT, FileSink
from icnn_bench.targets import Split, Target

CONFIG = "config.yaml"
WEIGHTS = "weights.pt"
DWELL = "dwell.csv"  # softplus-type sources: survival of shoulder spells
DENSITY = "density.csv"  # 1-D: x, model[, target]; 2-D: x, y, model[, target] on a grid
SAMPLES = "samples.png"
SAMPLES_CSV = "samples.csv"  # flows in 1-D/2-D: draws by inverting the flow
ERROR_LOG = "error.txt"


@dataclass
class LoopOutcome:
    status: str  # ok | diverged
    steps: int
    diverged_step: int | None = None
    error: str | None = None
    dwell: list[dict[str, float]] | None = None  # shoulder-dwell survival rows
    skipped_steps: int = 0  # nan_policy=skip_step: steps whose update was skipped


def run(config: dict[str, Any], run_dir: Path, sinks: list[Sink] | None = None) -> dict[str, Any]:
    """Train and evaluate one (target, model, method, seed); always leaves a result.json.

    With trainer.resume=auto (the default) a run folder that already holds this config's
    finished result is kept as it is, and one holding its checkpoint continues from there.
    A folder holding another config's work raises ConfigError and is left untouched."""
    run_dir = Path(run_dir)
    resume = (config.get("trainer") or {}).get("resume", "auto")
    checks.choice("trainer.resume", resume, RESUME)
    sinks = [FileSink(run_dir), *(sinks or [])]
    if resume == "auto":
        finished = finished_result(run_dir, config)
        if finished is not None:
            for sink in sinks:
                sink.already_finished(finished)
            return finished
    every = (config.get("trainer") or {}).get("checkpoint_every")
    checkpoints = open_checkpoints(run_dir, config, every if checks.is_int(every) else None, resume)
    write_config(run_dir, config)
    result = result_header(config)
    started = time.perf_counter()
    try:
        result.update(_run(config, run_dir, sinks, result, checkpoints))
    except (ConfigError, DataError) as error:
        result.update(status="failed", error=str(error))
    except KeyboardInterrupt:  # e.g. Ctrl-C: say how to continue, keep the checkpoint
        where = checkpoints.saved_step
        result.update(
            status="interrupted",
            error="interrupted; the same command resumes it "
            + (f"from step {where}" if where is not None else "from the start"),
        )
        finish(result, sinks, started)
        raise
    except Exception as error:  # recorded, so that a sweep goes on and nothing is lost
        io.write_text(run_dir / ERROR_LOG, traceback.format_exc())
        result.update(
            status="failed",
            error=f"{type(error).__name__}: {error} (traceback in {ERROR_LOG})",
        )
    finish(result, sinks, started)
    checkpoints.discard()  # finished one way or another: nothing left to resume
    return result


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    io.write_text(Path(run_dir) / CONFIG, yaml.safe_dump(config, sort_keys=False))


def result_header(config: dict[str, Any]) -> dict[str, Any]:
    """What names a run in result.json; status stays `failed` until the run says otherwise."""
    return {
        "target": config.get("target", {}).get("name"),
        "model": config.get("model", {}).get("name"),
        "method": method_label(config),
        "seed": config.get("seed"),
        "status": "failed",
    }


def finish(result: dict[str, Any], sinks: list[Sink], started: float) -> None:
    """Complete the result's contract keys and hand it to every sink (result.json, console)."""
    result["wall_s"] = time.perf_counter() - started  # build + train + evaluate + write
    for key in ("test_nll", "kl", "steps", "steps_per_s", "error"):
        result.setdefault(key, None)  # the contract's keys are always present
    for sink in sinks:
        sink.finish(result)


def finished_result(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's result when it is this config's finished (ok) run, else None; another
    config's finished run is refused rather than overwritten."""
    try:
        result = json.loads((run_dir / RESULT).read_text())
        saved = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(result, dict) or result.get("status") != "ok":
        return None
    difference = first_difference(saved or {}, config)
    if difference is not None:
        raise ConfigError(
            f"{run_dir} holds a finished run of another config ({difference}); use a new run "
            "folder, or trainer.resume=never to overwrite it"
        )
    return result


@dataclass
class Prepared:
    """One run built and ready to train: what `_run` hands from set-up to training."""

    seed: int
    device: torch.device
    settings: TrainerSettings
    target: Target
    split: Split
    model: DensityModel


def prepare(config: dict[str, Any], run_dir: Path) -> Prepared:
    """Check the config and build data and model; fails (ConfigError, DataError) before
    any training."""
    seed = config.get("seed")
    checks.integer("seed", seed, minimum=0)
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
    model = model_from_config(config, target, seed, train=split.train).to(device)
    split = Split(*(part.to(device) for part in (split.train, split.val, split.test)))
    model.use_training_split(split.train)
    return Prepared(seed, device, settings, target, split, model)


def _run(
    config: dict[str, Any],
    run_dir: Path,
    sinks: list[Sink],
    info: dict[str, Any],
    checkpoints: Checkpoints,
) -> dict[str, Any]:
    job = prepare(config, run_dir)
    resumed = checkpoints.resume_from["step"] if checkpoints.resume_from else None
    for sink in sinks:
        sink.start({**info, "resumed_from_step": resumed}, job.settings.steps)
    started = time.perf_counter()
    outcome = train_loop(job.model, job.split, job.settings, job.seed, sinks, checkpoints)
    return conclude(job, outcome, time.perf_counter() - started, run_dir, resumed)


def conclude(
    job: Prepared, outcome: LoopOutcome, train_s: float, run_dir: Path, resumed: int | None = None
) -> dict[str, Any]:
    """After training: evaluate under the pinned emission and write the run folder's files."""
    model, split, target = job.model, job.split, job.target
    out: dict[str, Any] = {
        "status": outcome.status,
        "steps": outcome.steps,
        "train_s": train_s,
        "steps_per_s": (outcome.steps - (resumed or 0)) / train_s if train_s > 0 else math.nan,
        "device": str(job.device),
        "dim": target.dim,
        "n_params": sum(p.numel() for p in model.trainable_parameters()),
        "skipped_steps": outcome.skipped_steps,
    }
    if resumed is not None:
        out["resumed_from_step"] = resumed
    if outcome.dwell:
        io.write_csv(run_dir / DWELL, pd.DataFrame(outcome.dwell))
    if outcome.status != "ok":
        out.update(diverged_step=outcome.diverged_step, error=outcome.error)
        return out
    model.pin(split.train)
    out.update(evaluate(model, split, target))
    _save(model, run_dir, target, split)
    if hasattr(model, "sample") and target.dim <= 2:
        try:
            samples = model.sample(2000, torch.Generator().manual_seed(job.seed))
            io.write_csv(run_dir / SAMPLES_CSV, pd.DataFrame(samples.cpu().numpy()))
        except InversionError as error:  # the model is fine; only its pictures are missing
            out["sampling_error"] = str(error)
    return out


# skip_step gives up after this many non-finite steps in a row: the run will not recover
MAX_CONSECUTIVE_SKIPS = 50


class SeedRun:
    """One seed's side of training: its batch and probe streams, its evaluations, curve and
    sinks. The optimizer lives outside, so that one optimizer can step many seeds at once."""

    def __init__(
        self,
        model: DensityModel,
        split: Split,
        settings: TrainerSettings,
        seed: int,
        sinks: list[Sink],
    ) -> None:
        self.model, self.split, self.settings, self.sinks = model, split, settings, sinks
        self.batches = torch.Generator(device=split.train.device).manual_seed(seed)
        self.probes = torch.Generator().manual_seed(seed + 7919)  # training's stream untouched
        self.loop: dict[str, Any] = {  # what a checkpoint holds besides modules and streams
            "losses": torch.full((settings.steps,), math.nan),
            "rows": [],
            "last_logged": 0,
            "constrained_grad": math.nan,
            "skipped": 0,
            "dwell": ShoulderDwell(settings.eval_every),
        }

    def next_batch(self) -> Tensor:
        train = self.split.train
        index = torch.randint(
            train.shape[0], (self.settings.batch_size,), generator=self.batches, device=train.device
        )
        return train[index]

    def log_eval(self, step: int) -> None:
        loop, model, settings = self.loop, self.model, self.settings
        last = loop["last_logged"]
        window = loop["losses"][last:step]
        row = {
            "step": step,
            "train_loss": float(window.nanmean()) if step > last else math.nan,
            "val_nll": validation_nll(model, self.split),
            "dead_frac": model.dead_fraction(),
            "grad_norm": loop["constrained_grad"],
        }
        if settings.probe_every and step % settings.probe_every == 0:
            row.update(probe_row(model, self.split, settings, self.probes))
        if step > 0:  # the shoulder of the weights trained so far
            loop["dwell"].observe(model)
        loop["rows"].append(row)
        _emit(self.sinks, list(range(last + 1, step + 1)), window.tolist(), row)
        loop["last_logged"] = step

    def diverged(self, step: int, cause: str) -> LoopOutcome:
        """Stop at `step`, keeping the curve up to the last finite step."""
        if step - 1 > self.loop["last_logged"]:
            with contextlib.suppress(NonFiniteWeights):
                self.log_eval(step - 1)
        return LoopOutcome(
            status="diverged",
            steps=step - 1,
            diverged_step=step,
            error=cause,
            skipped_steps=self.loop["skipped"],
        )

    def finished(self) -> LoopOutcome:
        return LoopOutcome(
            status="ok",
            steps=self.settings.steps,
            dwell=self.loop["dwell"].survival(),
            skipped_steps=self.loop["skipped"],
        )

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_rng": self.model.rng_states(),
            "batches": self.batches.get_state(),
            "probes": self.probes.get_state(),
            "loop": self.loop,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.model.set_rng_states(state["model_rng"])
        self.batches.set_state(state["batches"])
        self.probes.set_state(state["probes"])
        self.loop = state["loop"]
        _replay(self.sinks, self.loop["rows"], self.loop["losses"])


def train_loop(
    model: DensityModel,
    split: Split,
    settings: TrainerSettings,
    seed: int,
    sinks: list[Sink],
    checkpoints: Checkpoints | None = None,
) -> LoopOutcome:
    """Adam on the model's loss (the batch NLL) with clipping; evaluates every `eval_every`,
    saves a checkpoint every `checkpoint_every` (and after the last step)."""
    seed_run = SeedRun(model, split, settings, seed, sinks)
    loop = seed_run.loop
    trainable = model.trainable_parameters()
    optimizer = make_adam(trainable, settings)
    schedule = make_schedule(optimizer, settings)
    max_norm = settings.grad_clip if settings.grad_clip is not None else math.inf

    def snapshot(step: int) -> dict[str, Any]:
        return {
            "step": step,
            **seed_run.state(),
            "global_rng": global_rng_state(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict() if schedule is not None else None,
        }

    start = 1
    state = checkpoints.resume_from if checkpoints is not None else None
    if state is not None:
        seed_run.restore(state)
        loop = seed_run.loop
        set_global_rng_state(state["global_rng"])
        optimizer.load_state_dict(state["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(state["schedule"])
        start = state["step"] + 1

    step = start - 1
    consecutive_skips = 0
    try:
        if state is None:
            seed_run.log_eval(0)
        for step in range(start, settings.steps + 1):
            batch = seed_run.next_batch()
            evaluating = step % settings.eval_every == 0 or step == settings.steps
            loss, total_norm = backward_and_clip(
                model, optimizer, trainable, batch, max_norm, loop if evaluating else None
            )
            if not bool(torch.isfinite(loss) & torch.isfinite(total_norm)):  # one host sync
                cause = non_finite_cause(model, batch, loss)
                consecutive_skips += 1
                if (
                    settings.nan_policy == "stop"
                    or cause.startswith("non-finite parameters")
                    or consecutive_skips >= MAX_CONSECUTIVE_SKIPS
                ):
                    if consecutive_skips > 1:
                        cause += f" ({consecutive_skips} steps in a row)"
                    return seed_run.diverged(step, cause)
                loop["skipped"] += 1  # nan_policy=skip_step: no update from this batch
                optimizer.zero_grad(set_to_none=True)
            else:
                consecutive_skips = 0
                optimizer.step()
                model.after_step()
                loop["losses"][step - 1] = loss.detach()
            if schedule is not None:
                schedule.step()
            if evaluating:
                seed_run.log_eval(step)
            if checkpoints is not None and checkpoints.due(step, settings.steps):
                checkpoints.save(snapshot(step))
    except NonFiniteWeights as error:
        return seed_run.diverged(max(step, 1), str(error))
    return seed_run.finished()


def backward_and_clip(
    model: DensityModel,
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    batch: Tensor,
    max_norm: float,
    record_into: dict[str, Any] | None = None,
) -> tuple[Tensor, Tensor]:
    """The step up to the update: gradients of the batch loss, clipped to `max_norm`; with
    `record_into` (the loop's state), records the constrained gradient norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss = model.loss_backward(batch)
    if record_into is not None:
        record_into["constrained_grad"] = grad_norm(model.constrained_parameters())
    return loss, clip_gradients(trainable, max_norm)


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> Tensor:
    """torch's clip_grad_norm_, minus its rescaling pass when nothing needs clipping (it
    multiplies by 1.0): the lift's step is bound by passes over its readout gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if math.isfinite(max_norm):
        coefficient = max_norm / (total + 1e-6)
        if bool(coefficient < 1.0):  # a host sync the loop's finite check makes anyway
            torch._foreach_mul_(grads, coefficient)
    return total


def _emit(sinks: list[Sink], steps: list[int], losses: list[float], row: dict) -> None:
    for sink in sinks:
        if steps:
            sink.log_train_losses(steps, losses)
        sink.log_eval(row)


def _replay(sinks: list[Sink], rows: list[dict], losses: Tensor) -> None:
    """Give the sinks of a resumed run the history logged before its checkpoint."""
    previous = 0
    for row in rows:
        step = int(row["step"])
        _emit(sinks, list(range(previous + 1, step + 1)), losses[previous:step].tolist(), row)
        previous = step


@torch.no_grad()
def non_finite_cause(model: DensityModel, batch: Tensor, loss: Tensor) -> str:
    """Name what went non-finite first: parameters, emitted weights, the loss, or gradients."""
    for name, parameter in model.named_parameters():
        if not bool(torch.isfinite(parameter).all()):
            return f"non-finite parameters ({name})"
    for source in model.weight_sources():
        emitted = source.emit(batch)
        bad = [name for name, value in emitted.items() if not bool(torch.isfinite(value).all())]
        if bad:
            return f"non-finite emitted weights ({source.name}: {', '.join(bad)})"
    if not bool(torch.isfinite(loss)):
        return "non-finite loss"
    bad = [
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all())
    ]
    return f"non-finite gradient ({', '.join(bad[:3])})"


def probe_row(
    model: DensityModel, split: Split, settings: TrainerSettings, generator: torch.Generator
) -> dict[str, float]:
    """The cross-covariance probe's columns for metrics.csv (sigma_jac2 = its trace)."""
    probe = probe_cross_covariance(
        model,
        split.train,
        settings.batch_size,
        settings.probe_batches,
        generator,
        settings.probe_permutations,
    )
    return {
        "sigma_jac2": probe.trace,
        "crosscov_fro": probe.frobenius,
        "crosscov_asym": probe.asymmetry,
        "crosscov_p": math.nan if probe.p_value is None else probe.p_value,
    }


def make_schedule(
    optimizer: torch.optim.Optimizer, settings: TrainerSettings
) -> torch.optim.lr_scheduler.StepLR | None:
    if not settings.lr_halve_every:
        return None
    return torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_halve_every, gamma=0.5)


def make_adam(params: list[torch.nn.Parameter], settings: TrainerSettings) -> torch.optim.Adam:
    """Fused Adam where this torch build has it: the lift's step is bound by optimizer traffic."""
    try:
        return torch.optim.Adam(
            params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


@torch.no_grad()
def validation_nll(model: DensityModel, split: Split) -> float:
    model.pin(split.train)
    try:
        return float(-model.log_prob(split.val).mean())
    finally:
        model.unpin()


@torch.no_grad()
def evaluate(model: DensityModel, split: Split, target: Target) -> dict[str, Any]:
    """Final metrics under the pinned emission: NLLs, and distances to the truth when known."""
    info = model.evaluation_info()
    test_lp = model.log_prob(split.test)
    sample_se = float(test_lp.std() / math.sqrt(test_lp.numel()))
    out: dict[str, Any] = {
        "test_nll": float(-test_lp.mean()),
        # test-sample noise and, for importance sampling, the log Z Monte Carlo error
        "test_nll_se": math.hypot(sample_se, info.get("log_z_se", 0.0)),
        "val_nll": float(-model.log_prob(split.val).mean()),
        **info,
        "dead_frac": model.dead_fraction(),
    }
    if model.kind == "flow":
        out["test_bits_per_dim"] = out["test_nll"] / (target.dim * math.log(2))
    entropy = target.entropy()
    if entropy is not None:
        out["entropy"] = entropy
        out["kl_mc"] = out["test_nll"] - entropy
    if model.kind == "flow" and target.dim <= 2 and target.box() is not None:
        out["grid_mass"] = flow_mass(model, target)
    grid = evaluation_grid(model, target)
    if grid is not None:
        nodes, log_cell = grid
        fitted = model.log_prob(nodes).cpu()
        truth = target.log_prob(nodes.cpu())
        if truth is not None:
            out.update(grid_divergences(truth, fitted, log_cell))
    return out


def flow_mass(model: DensityModel, target: Target, widen: float = 3.0) -> float:
    """A flow's total mass on a grid over the target's box widened `widen` times: a check
    that the reported density is normalised (it should be 1 up to grid error)."""
    box = [
        ((lo + hi) / 2 - widen * (hi - lo) / 2, (lo + hi) / 2 + widen * (hi - lo) / 2)
        for lo, hi in target.box()
    ]
    nodes, log_cell = midpoint_grid(box, 8000 if target.dim == 1 else 300 * 300)
    log_p = model.log_prob(nodes.to(model.device)).double()
    return float(torch.logsumexp(log_p, 0).exp() * math.exp(log_cell))


def evaluation_grid(model: DensityModel, target: Target) -> tuple[torch.Tensor, float] | None:
    """Nodes on the target's box for d <= 2: the EBM's own log Z grid, else a fine grid."""
    if isinstance(model, EnergyModel):
        if isinstance(model.log_z_estimator, QuadratureLogZ):
            return model.log_z_estimator.grid(training=False)
        return None
    box = target.box()
    if box is None or target.dim > 2:
        return None
    nodes, log_cell = midpoint_grid(box, 8000 if target.dim == 1 else 200 * 200)
    return nodes.to(model.device), log_cell


def _save(model: DensityModel, run_dir: Path, target: Target, split: Split) -> None:
    io.save_torch(
        run_dir / WEIGHTS,
        {
            "model": model.state_dict(),  # every parameter and buffer (e.g. a fitted proposal)
            "pinned": model.pinned_state(),  # the evaluation emission of each weight source
        },
    )
    if target.dim <= 2 and target.box() is not None:
        io.write_csv(run_dir / DENSITY, density_table(model, target, split.train.cpu()))
    if hasattr(target, "decode") and isinstance(model, EnergyModel):
        write_decoded_samples(model, target, split, run_dir)


def write_decoded_samples(model: EnergyModel, target: Target, split: Split, run_dir: Path) -> None:
    """Latent targets: MALA samples of the fitted EBM, decoded next to real test images."""
    from icnn_bench.report.figures import digits_figure

    generator = torch.Generator(device=split.train.device).manual_seed(0)
    start = split.train[:16]
    samples = mala(model.energy, start, steps=400, step_size=0.02, generator=generator)
    title = f"{target.name} d={target.dim}, {model.method_name}: MALA 400 steps from train rows"
    digits_figure(target.decode(split.test[:16]), target.decode(samples), run_dir / SAMPLES, title)


@torch.no_grad()
def density_table(model: DensityModel, target: Target, train: Tensor | None = None) -> pd.DataFrame:
    """The fitted (and true, where known) density on a grid over the box: 600 points in 1-D,
    120 x 120 in 2-D, where a `data` column also holds the training split's histogram."""
    box = target.box()
    per_axis = 600 if target.dim == 1 else 120
    nodes, log_cell = midpoint_grid(box, per_axis**target.dim)
    fitted = model.log_prob(nodes.to(model.device)).cpu().exp()
    truth = target.log_prob(nodes)
    table = {axis: nodes[:, i].numpy() for i, axis in zip(range(target.dim), "xy", strict=False)}
    table["model"] = fitted.numpy()
    if truth is not None:
        table["target"] = truth.exp().numpy()
    if target.dim == 2 and train is not None:
        edges = [np.linspace(lo, hi, per_axis + 1) for lo, hi in box]
        counts, _, _ = np.histogram2d(train[:, 0].numpy(), train[:, 1].numpy(), bins=edges)
        table["data"] = (counts / (len(train) * math.exp(log_cell))).reshape(-1)  # ij order
    return pd.DataFrame(table)
