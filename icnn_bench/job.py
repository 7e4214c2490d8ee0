"""One Hydra job (one run folder, or one folder of seeds): its sinks, the records Hydra
keeps of it, the watch on the command that launched it, and the report at a sweep's end."""

from __future__ import annotations

import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from icnn_bench import registry, runner
from icnn_bench.command_line import first_line
from icnn_bench.errors import ConfigError
from icnn_bench.evaluation import validation_value
from icnn_bench.run_folder import RECORD_FILES
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.console import ConsoleSink
from icnn_bench.sweep_state import SweepState


def _register_job_config_dirs(hydra_cfg: Any) -> None:
    """In a job (also a joblib or submitit worker): the user's config folders, so that their
    YAMLs' `_target_` can name classes in Python files there."""
    package = registry.PACKAGE_CONF.resolve()
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file" and Path(source.path).resolve() != package:
            registry.add_search_dir(source.path)


def _stop_with_the_launcher(sweep: SweepState) -> None:
    """In a job run by another process (a joblib worker, a submitit job): exit as soon as
    the command that launched the sweep is gone, so that a killed sweep leaves no job
    training into its folder (files are written atomically: nothing is left half-written)."""
    launcher = sweep.launcher_pid()  # None for a job on another machine (a cluster's node)
    if (
        launcher in (None, os.getpid())
        or "SLURM_JOB_ID" in os.environ  # a cluster job outlives the submitting command
        or getattr(_stop_with_the_launcher, "watching", False)
    ):
        return
    _stop_with_the_launcher.watching = True

    def watch() -> None:
        while True:
            try:
                os.kill(launcher, 0)
            except ProcessLookupError:
                os._exit(143)
            except PermissionError:
                pass  # alive, another user's
            threading.Event().wait(1.0)

    threading.Thread(target=watch, name="icnn-bench-launcher-watch", daemon=True).start()


def run_task(cfg: DictConfig) -> float | None:
    """One Hydra job = one run folder."""
    hydra_cfg = HydraConfig.get()
    sweep = SweepState.from_environ()
    _stop_with_the_launcher(sweep)
    _register_job_config_dirs(hydra_cfg)
    try:
        return _run_task(cfg, hydra_cfg, sweep)
    except OSError as error:  # full disk, read-only folder: one line, not a traceback
        where = error.filename or hydra_cfg.runtime.output_dir
        print(f"icnn-bench: cannot write to {where}: {error.strerror or error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.RUN:
            sys.exit(1)
        return math.inf


def _run_task(cfg: DictConfig, hydra_cfg: Any, sweep: SweepState) -> float | None:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    job = JobContext.of(hydra_cfg, config, sweep)
    try:
        sinks = make_sinks(config, run_dir, job)
    except ConfigError as error:  # e.g. logger.mode=bogus: one line, before any training
        print(f"icnn-bench: {error}", file=sys.stderr)
        sys.exit(2)
    records = hydra_records(cfg, hydra_cfg)
    if config.get("seeds") is not None:
        return _run_seeds(config, run_dir, hydra_cfg, records)
    try:
        result = runner.run(config, run_dir, sinks, records)
    except ConfigError as error:  # the run folder holds another run's work: left untouched
        return _refused(error, hydra_cfg)
    if hydra_cfg.mode == RunMode.RUN:
        if result["status"] == "ok":  # one run is worth a look: its curve and density
            from icnn_bench.plotting import run_figure

            figure = run_figure(run_dir)
            if figure is not None:
                print(f"figure: {figure}")
        print(f"run folder: {run_dir}")
        if result["status"] != "ok":
            sys.exit(1)
    value = validation_value(result)
    # the objective a sweeper (e.g. optuna) minimises: a run that did not finish is worst
    return value if result["status"] == "ok" and value is not None else math.inf


def hydra_records(cfg: DictConfig, hydra_cfg: Any) -> dict[str, str]:
    """What Hydra records of a job (its config, Hydra's, the overrides), for the run to write
    once its folder is its own (hydra.output_subdir is null: a command that is refused must
    not overwrite the folder's records)."""
    texts = (
        OmegaConf.to_yaml(cfg),
        OmegaConf.to_yaml({"hydra": hydra_cfg}),
        OmegaConf.to_yaml(list(hydra_cfg.overrides.task)),
    )
    return dict(zip(RECORD_FILES, texts, strict=True))


def _run_seeds(
    config: dict[str, Any], job_dir: Path, hydra_cfg: Any, records: dict[str, str]
) -> float:
    """A job holding every seed of its cell (`seeds=[...]`): one run folder per seed below
    the job folder; returns the mean validation NLL of the finished seeds."""
    from icnn_bench.runner import run_seeds

    job = JobContext.of(hydra_cfg, config, SweepState.from_environ())
    try:
        results = run_seeds(
            config,
            job_dir,
            lambda cfg, run_dir: make_sinks(cfg, run_dir, job, runs_per_job=len(config["seeds"])),
            records,
        )
    except ConfigError as error:
        return _refused(error, hydra_cfg)
    if hydra_cfg.mode == RunMode.RUN:
        print(f"run folders: {job_dir}/seed*")
        if any(r["status"] != "ok" for r in results):
            sys.exit(1)
    values = [validation_value(r) for r in results if r["status"] == "ok"]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values and len(values) == len(results) else math.inf


def _refused(error: ConfigError, hydra_cfg: Any) -> float:
    """One line; a single run exits 2, a sweep's job reports the worst objective and goes on."""
    print(f"icnn-bench: {error}", file=sys.stderr)
    if hydra_cfg.mode == RunMode.RUN:
        sys.exit(2)
    return math.inf


def sweep_group(hydra_cfg: Any, experiment_name: str | None) -> str | None:
    """The W&B group of a multirun's jobs: `<experiment_name>-<sweep folder name>`, one per
    sweep; a single run has none."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return f"{experiment_name}-{Path(str(hydra_cfg.sweep.dir)).name}"


@dataclass(frozen=True)
class JobContext:
    """What a run's sinks need to know of the job around it: `group`, its W&B group; `swept`,
    its values of what the sweep varies (its name and flat keys in W&B); `single`, a single
    run (its weights go to W&B unless told not to); `sweep`, `sweep_dir`: for progress lines."""

    group: str | None = None
    swept: dict[str, Any] = field(default_factory=dict)
    single: bool = False
    sweep: SweepState | None = None
    sweep_dir: Path | None = None

    @classmethod
    def of(cls, hydra_cfg: Any, config: dict[str, Any], sweep: SweepState) -> JobContext:
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        return cls(
            group=sweep_group(hydra_cfg, config.get("experiment_name")),
            swept=_swept(hydra_cfg, sweep.axes),
            single=not multirun,
            sweep=sweep,
            sweep_dir=Path(str(hydra_cfg.sweep.dir)).absolute() if multirun else None,
        )


def make_sinks(
    config: dict[str, Any], run_dir: Path, job: JobContext | None = None, runs_per_job: int = 1
) -> list[Sink]:
    """The sinks `config["logger"]` asks for next to the run folder's files (always written):
    the console line, and with `logger=wandb` a W&B run (in `job.group` unless the logger
    config names one); `runs_per_job`: the seeds a job of several holds (progress counts runs)."""
    job = job or JobContext()
    logger = config.get("logger") or {}
    sinks: list[Sink] = [
        ConsoleSink(
            progress=logger.get("progress", "auto"),
            swept=job.swept,
            runs_per_job=runs_per_job,
            sweep=job.sweep,
            sweep_dir=job.sweep_dir,
        )
    ]
    if logger.get("name") == "wandb":
        from icnn_bench.sinks.wandb import WandbSink

        options = ("project", "entity", "tags", "job_type", "mode", "dir", "init_timeout")
        settings = {key: logger[key] for key in options if logger.get(key) is not None}
        group = logger.get("group") if logger.get("group") is not None else job.group
        weights = logger.get("log_weights", "auto")
        if weights not in (True, False, "auto"):
            raise ConfigError(f"logger.log_weights={weights!r}; choose one of: auto, true, false")
        sinks.append(
            WandbSink(
                config,
                run_dir,
                group=group,
                swept=job.swept,
                log_weights=job.single if weights == "auto" else weights,
                silent=bool(logger.get("silent", True)),
                **settings,
            )
        )
    return sinks


def _swept(hydra_cfg: Any, varying: tuple[str, ...]) -> dict[str, Any]:
    """This job's values of the settings its sweep varies, typed."""
    out = {}
    for override in hydra_cfg.overrides.task:
        key, _, value = str(override).partition("=")
        key = key.lstrip("+~")
        if key not in varying or not value:
            continue
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key] = value
    return out


class ReportCallback(Callback):
    """After a multirun, aggregate its sweep folder and print the comparison table; a sweep
    with failed runs (or no report written) ends the command with its closing line, exit 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from icnn_bench.report import make_report

        sweep_dir = Path(config.hydra.sweep.dir)
        under_test = (config.get("report") or {}).get("under_test")
        try:
            report = make_report(sweep_dir, under_test=under_test)
        except (FileNotFoundError, ValueError) as error:
            print(f"icnn-bench: no report: {error}", file=sys.stderr)
            return
        except OSError as error:
            why = error.strerror or first_line(error)
            raise SystemExit(f"icnn-bench: cannot write the report to {sweep_dir}: {why}") from None
        print_report(report)
        logger = config.get("logger") or {}
        if logger.get("name") == "wandb":  # the comparison itself, as one W&B run
            from icnn_bench.sinks.wandb import log_sweep_report

            group = logger.get("group") or f"{config.experiment_name}-{sweep_dir.name}"
            log_sweep_report(
                report,
                sweep_dir,
                project=logger.get("project"),
                entity=logger.get("entity"),
                group=group,
                mode=logger.get("mode"),
            )
        if report.failures:  # after the W&B run: the closing line ends the command
            raise SystemExit(f"icnn-bench: {report.failure_line()}")


def print_report(report) -> None:
    print()
    if report.n_ok == 0:
        print("no run finished: no table")
    else:
        print(_first_table(report.table_markdown))
    if report.verdicts:
        print()
        print("\n".join(report.verdicts))
    board = report.leaderboard
    if board is not None:
        ranks = ", ".join(f"{m} {r:.2f}" for m, r in board.mean_ranks.items())
        friedman = (
            "" if board.friedman_p != board.friedman_p else f"; Friedman p={board.friedman_p:.3g}"
        )
        print(f"\nmean ranks over {len(board.ranks)} cells (1 = best): {ranks}{friedman}")
    skipped = ", ".join(f"{n} {status}" for status, n in report.unfinished.items())
    print(f"\n{report.n_runs} runs aggregated{f' (skipped: {skipped})' if skipped else ''};")
    print("full tables and figures:")
    for path in report.files:
        print(f"  {path}")


def _first_table(markdown: str) -> str:
    """The headline (first) metric table of table.md, for the terminal."""
    sections = markdown.split("\n## ")
    return "## " + sections[1].strip() if len(sections) > 1 else markdown
