"""Runs and cells: build -> train -> evaluate -> write the run folders. Plain dicts, no Hydra.

A cell is the seeds of one (target, model, method) trained by one stepper: one seed
(`run`), or a job's `seeds` stacked into one vmapped model (`run_seeds` with
trainer.vectorize). Resume, interruption, failures and the run-folder files are handled
here once for both: every seed's folder always ends with a result.json.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from icnn_bench import checks, io, outputs, registry
from icnn_bench.build import (
    RESUME,
    TrainerSettings,
    check_vectorize,
    method_label,
    model_from_config,
    target_from_config,
)
from icnn_bench.checkpoint import Checkpoints, open_checkpoints
from icnn_bench.devices import (
    check_device_name,
    deterministic_kernels,
    free_memory,
    resolve_device,
)
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.evaluation import EvaluationPool, evaluate
from icnn_bench.loop import LoopOutcome, OneSeed, SeedRun, StackedSeeds, train_loop
from icnn_bench.models.base import DensityModel
from icnn_bench.models.potential import InversionError
from icnn_bench.run_folder import (
    CHECKPOINT,
    ERROR_LOG,
    finished_result,
    owned,
    write_config,
    write_records,
)
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.files import FileSink
from icnn_bench.targets import Split, Target

SinkFactory = Callable[[dict[str, Any], Path], list[Sink]]


@dataclass
class Prepared:
    """One seed built and ready to train."""

    seed: int
    device: torch.device
    settings: TrainerSettings
    target: Target
    split: Split
    model: DensityModel
    stream: bool = False  # data.stream: batches drawn fresh from the target

    def evaluation_pool(self) -> EvaluationPool:
        return EvaluationPool(self.settings, self.split, self.target, self.seed)


@dataclass
class SeedJob:
    """One seed's run folder within a cell, and what has become of it."""

    config: dict[str, Any]
    run_dir: Path
    sinks: list[Sink]
    result: dict[str, Any] = field(default_factory=dict)
    prepared: Prepared | None = None
    started: float = field(default_factory=time.perf_counter)
    done: bool = False
    # how the run was made ({records file name: text}, run_folder.RECORDS), written with
    # its config once the folder is accepted: a refused command leaves the folder's own
    records: dict[str, str] = field(default_factory=dict)
    records_dir: Path | None = None  # where they go (a seeds job: its job folder)
    prepare_s: float = 0.0  # building its data and model


def run(
    config: dict[str, Any],
    run_dir: Path,
    sinks: list[Sink] | None = None,
    records: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one (target, model, method, seed); always leaves a result.json.

    With trainer.resume=auto (the default) a run folder that already holds this config's
    finished result is kept as it is, and one holding its checkpoint continues from there.
    A folder holding another config's work, or held by another process, raises ConfigError
    and is left untouched. `records`: {file name: text} for run_folder.RECORDS, written once
    the run is accepted."""
    job = SeedJob(config, Path(run_dir), [FileSink(run_dir), *(sinks or [])], records=records or {})
    return run_cell([job], stacked=False)[0]


def seed_config(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The config of one seed of a cell; the data follow the seed unless pinned apart."""
    one = copy.deepcopy(config)
    one.pop("seeds", None)
    if one.get("data", {}).get("seed", one.get("seed")) == one.get("seed"):
        one.setdefault("data", {})["seed"] = seed
    one["seed"] = seed
    return one


def run_seeds(
    config: dict[str, Any],
    job_dir: Path,
    make_sinks: SinkFactory | None = None,
    records: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every seed of `config["seeds"]` into `job_dir/seed<k>`, one after another or (with
    trainer.vectorize) as one stacked cell; returns their results."""
    seeds = config.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(checks.is_int(s) for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of integers")
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(f"seeds={seeds!r} names seed {repeated[0]} twice; each seed once")
    make_sinks = make_sinks or (lambda cfg, run_dir: [])
    jobs = []
    for seed in seeds:
        one, run_dir = seed_config(config, seed), Path(job_dir) / f"seed{seed}"
        sinks = [FileSink(run_dir), *make_sinks(one, run_dir)]
        jobs.append(SeedJob(one, run_dir, sinks, records=records or {}, records_dir=job_dir))
    choice = (config.get("trainer") or {}).get("vectorize", "auto")
    return run_cell(jobs, stacked=use_vectorized(config), explicit=choice is True, job_dir=job_dir)


def use_vectorized(config: dict[str, Any]) -> bool:
    """trainer.vectorize: true, false, or auto: stacked on a GPU, and on a CPU where the
    method batches well there (results/bench.md: not the lift). Whether the model can be
    stacked at all is its own to say, once built."""
    choice = (config.get("trainer") or {}).get("vectorize", "auto")
    check_vectorize(choice)
    if choice != "auto":
        return choice
    device = config.get("device", "auto")
    if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return True
    try:
        cls = registry.resolve(registry.target_of("method", config.get("method") or {}), "method")
    except ConfigError:
        return False  # the run fails with that message
    return bool(getattr(cls, "batches_well_on_cpu", True))


# ---------------------------------------------------------------- one cell


def run_cell(
    jobs: list[SeedJob], stacked: bool, explicit: bool = False, job_dir: Path | None = None
) -> list[dict[str, Any]]:
    """Train the pending seeds of `jobs` (stacked into one model when `stacked`), keeping
    the finished ones; returns every job's result in order."""
    resume = (jobs[0].config.get("trainer") or {}).get("resume", "auto")
    checks.choice("trainer.resume", resume, RESUME)
    # a setting other than true/false fails each job at its checks, in its result.json
    with contextlib.ExitStack() as owning:
        for job in jobs:  # one process per folder; refused (FolderInUse) before any change
            owning.enter_context(owned(job.run_dir))
        owning.enter_context(deterministic_kernels(jobs[0].config.get("deterministic") is True))
        return _run_pending(jobs, resume, stacked, explicit, job_dir)


def _run_pending(
    jobs: list[SeedJob], resume: str, stacked: bool, explicit: bool, job_dir: Path | None
) -> list[dict[str, Any]]:
    pending = [job for job in jobs if not _kept(job, resume)]
    for job in pending:
        _prepare(job)
    ready = [job for job in pending if not job.done]
    if stacked and ready:
        problem = _stacking_problem(ready)
        if problem is not None and explicit:
            for job in ready:
                _fail(job, problem)
            ready = []
        elif problem is not None:  # vectorize=auto on a cell it does not apply to
            stacked = False
    if stacked and ready:
        _train(ready, Path(job_dir) / CHECKPOINT, stacked=True)
    else:
        for job in ready:  # its wall time: its own build and training, not the seeds' before
            job.started = time.perf_counter() - job.prepare_s
            _train([job], job.run_dir / CHECKPOINT, stacked=False)
    return [job.result for job in jobs]


def _kept(job: SeedJob, resume: str) -> bool:
    """A finished run of this config (resume=auto) is kept: its sinks are told, nothing runs."""
    if resume != "auto":
        return False
    finished = finished_result(job.run_dir, job.config)
    if finished is None:
        return False
    for sink in job.sinks:
        sink.already_finished(finished)
    job.result, job.done = finished, True
    return True


def _prepare(job: SeedJob) -> None:
    job.started = time.perf_counter()
    job.result = result_header(job.config)
    try:
        job.prepared = prepare(job.config, job.run_dir)
        job.prepare_s = time.perf_counter() - job.started
    except (ConfigError, DataError) as error:
        _fail(job, str(error))
    except Exception as error:  # recorded, so that a sweep goes on and nothing is lost
        _crash(job, error)


def _stacking_problem(jobs: list[SeedJob]) -> str | None:
    return jobs[0].prepared.model.vectorization_problem()


def _train(jobs: list[SeedJob], checkpoint_path: Path, stacked: bool) -> None:
    """Checkpoints, training, evaluation and the files of one cell of prepared jobs."""
    settings = jobs[0].prepared.settings
    identity = jobs[0].config if not stacked else {"seeds": [j.config for j in jobs]}
    # a checkpoint of another config raises ConfigError: refused, the folder left untouched
    checkpoints = open_checkpoints(
        checkpoint_path,
        identity,
        settings.checkpoint_every,
        settings.resume,
        device=str(jobs[0].prepared.device),
    )
    if checkpoints.note:
        print(f"icnn-bench: {checkpoints.note}", flush=True)
    resumed = checkpoints.resume_from["step"] if checkpoints.resume_from else None
    runs = []
    for job in jobs:
        _write_config(job)
        if stacked:
            job.result["vectorized_seeds"] = len(jobs)
        for sink in job.sinks:
            sink.start({**job.result, "resumed_from_step": resumed}, settings.steps)
        p = job.prepared
        stream = p.target if p.stream else None
        runs.append(
            SeedRun(p.model, p.split, settings, p.seed, job.sinks, p.evaluation_pool(), stream)
        )
    started = time.perf_counter()
    try:
        models = [job.prepared.model for job in jobs]
        stepper = StackedSeeds(models, settings) if stacked else OneSeed(models[0], settings)
        outcomes = train_loop(runs, stepper, settings, checkpoints)
    except KeyboardInterrupt:  # e.g. Ctrl-C: say how to continue, keep the checkpoint
        where = checkpoints.saved_step
        for job in jobs:
            job.result.update(
                status="interrupted",
                error="interrupted; the same command resumes it "
                + (f"from step {where}" if where is not None else "from the start"),
            )
            finish(job.result, job.sinks, job.started)
        raise
    except Exception as error:  # one computation: every seed of it failed
        for job in jobs:
            _crash(job, error)
        # kept: the same command resumes from it once the cause (e.g. GPU memory) is fixed
        _say_kept(checkpoints)
        return
    train_s = time.perf_counter() - started
    for job, outcome in zip(jobs, outcomes, strict=True):
        try:
            job.result.update(conclude(job.prepared, outcome, train_s, job.run_dir, resumed))
        except Exception as error:
            io.write_text(job.run_dir / ERROR_LOG, traceback.format_exc())
            job.result.update(
                status="failed",
                error=f"{type(error).__name__}: {error} (traceback in {ERROR_LOG})",
            )
        finish(job.result, job.sinks, job.started)
        job.done = True
    checkpoints.discard()  # finished one way or another: nothing left to resume


def _say_kept(checkpoints: Checkpoints) -> None:
    if checkpoints.saved_step is not None and checkpoints.path.exists():
        print(
            f"icnn-bench: checkpoint of step {checkpoints.saved_step} kept in "
            f"{checkpoints.path.parent}; the same command resumes from it",
            flush=True,
        )


def _write_config(job: SeedJob) -> None:
    """The run's config and records: the folder is this run's from now on."""
    write_config(job.run_dir, job.config)
    write_records(job.records_dir or job.run_dir, job.records)


def _fail(job: SeedJob, message: str) -> None:
    _write_config(job)
    job.result = {**result_header(job.config), **job.result, "status": "failed", "error": message}
    finish(job.result, job.sinks, job.started)
    job.done = True


def _crash(job: SeedJob, error: Exception) -> None:
    io.write_text(job.run_dir / ERROR_LOG, traceback.format_exc())
    _fail(job, f"{type(error).__name__}: {error} (traceback in {ERROR_LOG})")


# ---------------------------------------------------------------- pieces


def result_header(config: dict[str, Any]) -> dict[str, Any]:
    """What names a run in result.json; status stays `failed` until the run says otherwise."""
    return {
        "target": (config.get("target") or {}).get("name"),
        "model": (config.get("model") or {}).get("name"),
        "method": method_label(config),
        "seed": config.get("seed"),
        "regime": (config.get("regime") or {}).get("name"),
        "status": "failed",
    }


def finish(result: dict[str, Any], sinks: list[Sink], started: float) -> None:
    """Complete the result's contract keys and hand it to every sink (result.json, console)."""
    result["wall_s"] = time.perf_counter() - started  # build + train + evaluate + write
    for key in ("test_nll", "kl", "steps", "steps_per_s", "error"):
        result.setdefault(key, None)  # the contract's keys are always present
    for sink in sinks:
        sink.finish(result)


MAX_SEED = 2**31 - 1  # derived seeds (streams, probes, batches) stay within torch's range


def _checked_settings(config: dict[str, Any]) -> tuple[int, TrainerSettings, Target]:
    """The checks that do not depend on the machine a run trains on."""
    seed = config.get("seed")
    checks.integer("seed", seed, minimum=0, maximum=MAX_SEED)
    data_seed = (config.get("data") or {}).get("seed", seed)
    checks.integer("data.seed", data_seed, minimum=0, maximum=MAX_SEED)
    check_device_name(config.get("device", "auto"))
    checks.boolean("deterministic", config.get("deterministic", False))
    settings = TrainerSettings.from_dict(config["trainer"])
    target = target_from_config(config["target"])
    return seed, settings, target


def preflight(config: dict[str, Any], on_this_machine: bool = True) -> None:
    """What every run checks before training, without data or training: a sweep makes
    these checks once, before any job (ConfigError / DataError). Jobs that run elsewhere
    (`on_this_machine=False`: a cluster's nodes) check their device and memory there."""
    seed, settings, target = _checked_settings(config)
    if on_this_machine:
        device = resolve_device(config.get("device", "auto"))
        check_memory(config, target, settings, device)
    target.check_available()
    model_from_config(config, target, seed)


def prepare(config: dict[str, Any], run_dir: Path) -> Prepared:
    """Check the config and build data and model; fails (ConfigError, DataError) before
    any training."""
    seed, settings, target = _checked_settings(config)
    device = resolve_device(config.get("device", "auto"))
    check_memory(config, target, settings, device)
    data_cfg = config["data"]
    target.use_cache_dir(Path(run_dir).parent / ".cache")  # e.g. an encoder a sweep shares
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
    stream = data_cfg.get("stream", False)
    if stream not in (False, True, "auto"):
        raise ConfigError(f"data.stream={stream!r}; choose one of: false, true, auto")
    if stream is True and not target.can_sample:
        raise ConfigError(
            f"data.stream=true draws every batch from the target, but {target.name} is a "
            "fixed data set; use data.stream=false (or auto)"
        )
    model = model_from_config(config, target, seed, train=split.train).to(device)
    split = Split(*(part.to(device) for part in (split.train, split.val, split.test)))
    model.use_training_split(split.train)
    streaming = stream is True or (stream == "auto" and target.can_sample)
    return Prepared(seed, device, settings, target, split, model, streaming)


def check_memory(
    config: dict[str, Any], target: Target, settings: TrainerSettings, device: torch.device
) -> None:
    """Refuse, naming the setting, a run whose data or model would not fit in the memory
    its device has free (an estimate: the largest arrays, float32)."""
    need = memory_estimate(config, target, settings)
    total = sum(need.values()) + (PROCESS_BYTES if device.type == "cpu" else 0.0)
    free = free_memory(device)
    if free is None or total <= free:
        return
    key = max(need, key=need.get)
    raise ConfigError(
        f"{key}={_lookup(config, key)!r} needs about {total / 2**30:.1f} GB (the run's "
        f"largest arrays); {_memory_name(device)} has {free / 2**30:.1f} GB free"
    )


PROCESS_BYTES = 0.5 * 2**30  # the process itself: torch, numpy, pandas, scipy loaded


def memory_estimate(
    config: dict[str, Any], target: Target, settings: TrainerSettings
) -> dict[str, float]:
    """Bytes of the largest arrays, by the setting that scales them: an upper bound (float32)
    of what a run holds at once, checked against measured peaks (tests/test_hostile_second)."""
    data, model = config.get("data") or {}, config.get("model") or {}
    dim = max(1, int(getattr(target, "dim", 1) or 1))
    need: dict[str, float] = {}
    for key in ("n_train", "n_val", "n_test"):
        n = data.get(key)
        if checks.is_int(n):
            need[f"data.{key}"] = 4.0 * 2 * n * dim  # the draw and its split copy
    need["trainer.steps"] = 4.0 * 2 * settings.steps  # the loss curve, and its checkpoint copy
    width, depth = model.get("width"), model.get("depth")
    if not (checks.is_int(width) and checks.is_int(depth) and width > 0 and depth > 0):
        return need
    entries = width * width * max(depth - 1, 1) + 3 * width * (dim + 1) * depth
    need["model.width"] = _bytes_per_entry(config) * entries
    need["trainer.batch_size"] = 4.0 * 6 * settings.batch_size * width * depth * dim
    for key in ("eval_nodes", "eval_samples"):  # evaluation: the ICNN on every point at once
        points = (config.get("log_z") or {}).get(key)
        if checks.is_int(points):
            need[f"log_z.{key}"] = 4.0 * (3 * width * depth + 2 * dim) * points
    return need


def _bytes_per_entry(config: dict[str, Any]) -> float:
    """What the configured method holds per ICNN entry (its own estimate; default: a
    parameter, its gradient, two Adam moments, an emission and a checkpoint copy)."""
    try:
        cls = registry.resolve(registry.target_of("method", config.get("method") or {}), "method")
    except ConfigError:
        cls = None  # the run fails with that message
    per_entry = getattr(cls, "training_bytes_per_entry", None)
    return float(per_entry(config.get("method") or {})) if per_entry else 4.0 * 6


def _memory_name(device: torch.device) -> str:
    return f"{device} (GPU memory)" if device.type == "cuda" else "this machine"


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


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
    outputs.write_dwell(run_dir, outcome.dwell or [])
    if outcome.status != "ok":
        out.update(diverged_step=outcome.diverged_step, error=outcome.error)
        return out
    out.update(model.training_summary())
    model.pin(job.evaluation_pool().draw(EvaluationPool.FINAL))
    out.update(evaluate(model, split, target))
    outputs.save_model(model, run_dir, target, split)
    if model.exact_sampler and target.dim <= 2:
        try:
            outputs.write_flow_samples(model, run_dir, job.seed)
        except InversionError as error:  # the model is fine; only its pictures are missing
            out["sampling_error"] = str(error)
    return out
