"""Command-line entry points and the checks a command gets before any job (Hydra lives here,
in compose.py and in conf/)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from icnn_bench import registry, runner
from icnn_bench.compose import compose_with_hydra
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.run_folder import RECORD_FILES
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.console import SWEEP_DIR, SWEEP_JOBS, SWEEP_START, ConsoleSink

CONF_DIR = registry.PACKAGE_CONF
GROUPS = ("target", "model", "log_z", "method", "trainer", "logger", "experiment")
HYDRA_GROUPS = {  # plugin-provided groups: what to install when a choice is missing
    "hydra/launcher": "launchers submitit_local, submitit_slurm: pip install 'icnn-bench[cluster]'",
    "hydra/sweeper": "the optuna sweeper: pip install 'icnn-bench[tune]'",
}


def available(group: str) -> list[str]:
    """Config names of a group: the YAML files of every config folder (the package's and
    those of --config-dir / hydra.searchpath), plus for hydra/* the installed plugins'."""
    names = set(registry.options(group))
    if group in HYDRA_GROUPS:
        names |= _plugin_choices(group)
    return sorted(names)


def _plugin_choices(group: str) -> set[str]:
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports installed Hydra plugins, which register their configs
    node = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {})
    return {name.removesuffix(".yaml") for name in node}


def unknown_choice(argv: list[str]) -> str | None:
    """One-line message for the first `group=name` override naming no config, else None."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if (key not in GROUPS and key not in HYDRA_GROUPS) or "(" in value:
            continue
        for choice in value.split(","):
            if choice and choice not in available(key):
                message = f"unknown {key} {choice!r}; choose one of: {', '.join(available(key))}"
                if key in HYDRA_GROUPS:
                    message += f" (for {HYDRA_GROUPS[key]})"
                return message
    return None


@dataclass(frozen=True)
class Command:
    """What the checks before any job learnt of a command line: the first problem found
    (one line, or None) and, for a sweep, what it varies ({key: "a,b,c"}; None otherwise)."""

    problem: str | None
    axes: dict[str, str] | None = None


def composition_problem(argv: list[str]) -> str | None:
    """One line for overrides Hydra cannot compose (a misspelt key, bad override syntax),
    found before any job starts; sweeps are checked at their first value."""
    return inspect_command(argv).problem


def inspect_command(argv: list[str]) -> Command:
    """Compose a command's first job once: its problems and, for a sweep, its axes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = _without_config_dir(argv)
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in argv):
        return Command(None, _axes_without_checks(argv))  # --cfg, -cn, ...: Hydra reports
    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        return Command(f"cannot parse the overrides: {_first_line(error)}")
    first = first_job(parsed)
    try:
        cfg = compose_with_hydra(first)
    except Exception as error:
        return Command(_misspelt_key(error, first) or _named(error, first))
    multirun = _is_sweep(argv, cfg, parsed)
    axes = _axes_of(cfg, parsed) if multirun else None
    swept = {o.get_key_element(): o.input_line for o in parsed if o.is_sweep_override()}
    params = cfg.hydra.sweeper.get("params") or {}
    swept.update({str(k): f"{k}={v}" for k, v in params.items()})
    for override in parsed:  # a plain value on the command line narrows a preset's axis
        if not override.is_sweep_override():
            swept.pop(override.get_key_element(), None)
    try:
        folder = Path(str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir))
    except Exception:  # an interpolation only a job can resolve: Hydra will say
        folder = None
    config = OmegaConf.to_container(cfg, resolve=False)
    local = not jobs_run_elsewhere(cfg.hydra.get("launcher"))
    config.pop("hydra", None)
    problem = (
        (folder is not None and output_problem(folder))
        or launcher_problem(argv)
        or (preflight_problem(config, swept, local) if multirun else None)
    )
    return Command(problem or None, axes)


def first_job(parsed: list[Any]) -> list[str]:
    """The overrides of a sweep's first job: each comma list (or range) at its first value;
    an interval (optuna) has none and is left out."""
    first = []
    for override in parsed:
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        with contextlib.suppress(Exception):
            value = next(iter(override.sweep_string_iterator()))
            first.append(f"{override.get_key_element()}={value}")
    return first


def sweep_or_preview(argv: list[str]) -> list[str]:
    """One rule for sweeps: a comma list (or range) on the command line sweeps, with or
    without -m, as a preset's axes do. With --cfg the command is a preview: the sweep's plan
    is printed before, and Hydra shows its first job's config (no -m)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = [a for a in argv if a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(_overrides_of(argv))
    except Exception:
        return argv  # Hydra says what is wrong
    sweeping = any(o.is_sweep_override() for o in parsed)
    if "--cfg" in flags or "-c" in flags:
        kept = [a for a in argv if a not in ("-m", "--multirun")]
        if not sweeping:
            return kept
        firsts = {o.input_line: first_job([o]) for o in parsed if o.is_sweep_override()}
        return [value for a in kept for value in firsts.get(a, [a])]  # in place
    if sweeping and "-m" not in flags and "--multirun" not in flags:
        return [*argv, "--multirun"]
    return argv


def _overrides_of(argv: list[str]) -> list[str]:
    """The overrides of a command line, without flags and their values (--cfg job)."""
    return [
        a
        for a in _without_config_dir(argv)
        if not a.startswith("-") and ("=" in a or a.startswith("~"))
    ]


def jobs_run_elsewhere(launcher: Any) -> bool:
    """Whether a sweep's launcher runs its jobs on other machines (a SLURM cluster's nodes),
    whose devices and memory the submitting machine cannot check."""
    target = str((launcher or {}).get("_target_", ""))
    return "Slurm" in target


def output_problem(folder: Path) -> str | None:
    """One line if the output folder cannot be made or written (read-only, not a folder, or
    a disk nearly full), before Hydra writes anything there."""
    existing = folder.expanduser().absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot write to {folder}: {existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write to {folder}: {error.strerror or error} ({existing})"
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return (
            f"cannot write to {folder}: only {free / 2**20:.0f} MB free on its disk "
            f"({existing}); runs need room for checkpoints and results"
        )
    return None


MIN_FREE_BYTES = 64 * 2**20


def launcher_problem(argv: list[str]) -> str | None:
    """The SLURM launcher where there is no SLURM: one line, not submitit's traceback."""
    for arg in argv:
        slurm = arg.split("=", 1)[-1] in ("slurm", "submitit_slurm")
        if arg.startswith("hydra/launcher=") and slurm and shutil.which("sbatch") is None:
            return (
                f"{arg} submits to SLURM, but there is no sbatch on this machine's PATH; "
                "run it on the cluster's login node, or use hydra/launcher=submitit_local "
                "or joblib here"
            )
    return None


def preflight_problem(
    config: dict[str, Any], swept: dict[str, str], local: bool = True
) -> str | None:
    """For a sweep, the checks every run would make, made once on its first job: a setting
    no run can pass stops the sweep before any job (settings the sweep varies do not).
    Checks of the machine (device, memory) only where the jobs run here (`local`)."""
    try:
        config = OmegaConf.to_container(OmegaConf.create(config), resolve=True)
        runner.preflight(config, on_this_machine=local)
    except (ConfigError, DataError) as error:
        message = str(error)
        # swept values named in the message (e.g. a swept target): words, not numbers
        items = [i for v in swept.values() for i in v.split("=", 1)[-1].split(",")]
        named = [i for i in items if len(i) >= 3 and not i.replace(".", "").isdigit()]
        if any(key in message for key in swept) or any(i in message for i in named):
            return None  # it depends on a swept value: the sweep reports it per run
        return message
    except Exception:
        return None  # the jobs will report it, each in its result.json
    return None


def _misspelt_key(error: Exception, overrides: list[str]) -> str | None:
    """`no setting trainer.stpes; did you mean trainer.steps?` for an unknown key."""
    match = re.match(r"Could not override '([^']+)'", str(error))
    if match is None:
        return None
    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
    try:
        node = compose_with_hydra(rest)
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:
        node = None
    names = list(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, [str(n) for n in names], n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return f"no setting {key}; {hint}(to add a new key use +{key}=...)"


def _named(error: Exception, overrides: list[str]) -> str:
    """Hydra's first line, led by the override it is about where the line names none."""
    line = _first_line(error)
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    if any(key and key in line for key in keys):
        return line
    for count in range(1, len(overrides) + 1):  # the first prefix that fails: its last one
        try:
            compose_with_hydra(overrides[:count])
        except Exception:
            return f"{overrides[count - 1]}: {line}"
    return line


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def config_dirs(argv: list[str]) -> list[Path]:
    """The user's config folders named on the command line: --config-dir/-cd and
    hydra.searchpath=[file://...] entries."""
    folders = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            folders.append(argv[i + 1])
        elif arg.startswith("--config-dir="):
            folders.append(arg.split("=", 1)[1])
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            value = arg.split("=", 1)[1].strip("[]")
            folders += [p.strip().strip("'\"") for p in value.split(",") if p.strip()]
    return [Path(f.removeprefix("file://")) for f in folders if not f.startswith("pkg://")]


def _without_config_dir(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            skip = True
            continue
        if arg.startswith("--config-dir="):
            continue
        out.append(arg)
    return out


def _register_job_config_dirs(hydra_cfg: Any) -> None:
    """In a job (also a joblib or submitit worker): the user's config folders, so that their
    YAMLs' `_target_` can name classes in Python files there."""
    for source in hydra_cfg.runtime.config_sources:
        if source.schema == "file" and Path(source.path).resolve() != CONF_DIR.resolve():
            registry.add_search_dir(source.path)


LAUNCHER_PID = "ICNN_BENCH_LAUNCHER_PID"  # the command that started a sweep's jobs


def _stop_with_the_launcher() -> None:
    """In a job run by another process (a joblib worker, a submitit job): exit as soon as
    the command that launched the sweep is gone, so that a killed sweep leaves no job
    training into its folder (files are written atomically: nothing is left half-written)."""
    host, _, pid = os.environ.get(LAUNCHER_PID, "").rpartition(":")
    launcher = int(pid) if pid.isdigit() else 0
    if (
        launcher in (0, os.getpid())
        or host != socket.gethostname()  # a cluster job: it outlives the submitting command
        or "SLURM_JOB_ID" in os.environ
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
    _stop_with_the_launcher()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        os.environ[SWEEP_DIR] = str(Path(str(hydra_cfg.sweep.dir)).absolute())
    _register_job_config_dirs(hydra_cfg)
    try:
        return _run_task(cfg, hydra_cfg)
    except OSError as error:  # full disk, read-only folder: one line, not a traceback
        where = error.filename or hydra_cfg.runtime.output_dir
        print(f"icnn-bench: cannot write to {where}: {error.strerror or error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.RUN:
            sys.exit(1)
        return math.inf


def _run_task(cfg: DictConfig, hydra_cfg: Any) -> float | None:
    run_dir = Path(hydra_cfg.runtime.output_dir)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        sinks = make_sinks(
            config,
            run_dir,
            sweep_group(hydra_cfg, config.get("experiment_name")),
            swept=_swept(hydra_cfg),
            single=hydra_cfg.mode == RunMode.RUN,
        )
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
    value = result.get("val_nll")
    # the objective a sweeper (e.g. optuna) minimises: a run that did not finish is worst
    return float(value) if result["status"] == "ok" and value is not None else math.inf


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

    group = sweep_group(hydra_cfg, config.get("experiment_name"))
    swept, single = _swept(hydra_cfg), hydra_cfg.mode == RunMode.RUN
    try:
        results = run_seeds(
            config,
            job_dir,
            lambda cfg, run_dir: make_sinks(
                cfg, run_dir, group, swept, single, runs_per_job=len(config["seeds"])
            ),
            records,
        )
    except ConfigError as error:
        return _refused(error, hydra_cfg)
    if hydra_cfg.mode == RunMode.RUN:
        print(f"run folders: {job_dir}/seed*")
        if any(r["status"] != "ok" for r in results):
            sys.exit(1)
    values = [r["val_nll"] for r in results if r["status"] == "ok" and r.get("val_nll")]
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


def make_sinks(
    config: dict[str, Any],
    run_dir: Path,
    group: str | None = None,
    swept: dict[str, Any] | None = None,
    single: bool = False,
    runs_per_job: int = 1,
) -> list[Sink]:
    """The sinks `config["logger"]` asks for next to the run folder's files (always written):
    the console line, and with `logger=wandb` a W&B run; `group` is its W&B group unless the
    logger config names one; `swept`: the run's command-line settings (its name and flat
    config keys in W&B); `single`: a single run (its weights go to W&B unless told not to);
    `runs_per_job`: the seeds a job of several holds (the sweep's progress counts runs)."""
    logger = config.get("logger") or {}
    sinks: list[Sink] = [
        ConsoleSink(progress=logger.get("progress", "auto"), swept=swept, runs_per_job=runs_per_job)
    ]
    if logger.get("name") == "wandb":
        from icnn_bench.sinks.wandb import WandbSink

        options = ("project", "entity", "tags", "job_type", "mode", "dir", "init_timeout")
        settings = {key: logger[key] for key in options if logger.get(key) is not None}
        group = logger.get("group") if logger.get("group") is not None else group
        weights = logger.get("log_weights", "auto")
        if weights not in (True, False, "auto"):
            raise ConfigError(f"logger.log_weights={weights!r}; choose one of: auto, true, false")
        sinks.append(
            WandbSink(
                config,
                run_dir,
                group=group,
                swept=swept,
                log_weights=single if weights == "auto" else weights,
                silent=bool(logger.get("silent", True)),
                **settings,
            )
        )
    return sinks


SWEEP_AXES = "ICNN_BENCH_SWEEP_AXES"  # the keys a sweep varies, set by main()


def _swept(hydra_cfg: Any) -> dict[str, Any]:
    """This job's values of the settings its sweep varies, typed."""
    varying = set(filter(None, os.environ.get(SWEEP_AXES, "").split(",")))
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
            why = error.strerror or _first_line(error)
            raise SystemExit(f"icnn-bench: cannot write the report to {sweep_dir}: {why}") from None
        _print_report(report)
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


def _print_report(report) -> None:
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


_hydra_main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(
    run_task
)


def main() -> None:
    # local jobs in other processes (joblib, submitit_local) watch this one
    os.environ.setdefault(LAUNCHER_PID, f"{socket.gethostname()}:{os.getpid()}")
    try:
        for folder in config_dirs(sys.argv[1:]):
            registry.add_search_dir(folder)
    except ConfigError as error:
        print(f"icnn-bench: {error}", file=sys.stderr)
        sys.exit(2)
    problem = unknown_choice(sys.argv[1:])
    command = Command(problem) if problem else inspect_command(sys.argv[1:])
    if command.problem is not None:
        print(f"icnn-bench: {command.problem}", file=sys.stderr)
        sys.exit(2)
    axes = command.axes
    if axes is not None and ("--cfg" in sys.argv[1:] or "-c" in sys.argv[1:]):
        _print_sweep_axes(axes)
    sys.argv = [sys.argv[0], *sweep_or_preview(sys.argv[1:])]
    if axes is not None and sweep_size(axes):  # for the runs' "k of N runs, ETA" lines
        os.environ[SWEEP_JOBS] = str(sweep_size(axes))
        os.environ[SWEEP_START] = str(time.time())
    if axes is not None:  # what each run's line and W&B run names: the settings that vary
        os.environ[SWEEP_AXES] = ",".join(k for k, v in axes.items() if "," in v or "(" in v)
    if any(arg == "hydra/launcher=submitit_local" for arg in sys.argv[1:]) and not any(
        arg.startswith("hydra.sweeper.max_batch_size=") for arg in sys.argv[1:]
    ):  # submitit_local starts a batch's jobs at once: one batch per core
        sys.argv.append(f"hydra.sweeper.max_batch_size={os.cpu_count() or 1}")
    try:
        _hydra_main()
    except KeyboardInterrupt:
        print(
            "icnn-bench: interrupted; run the same command again to resume: finished runs "
            "are kept, the others continue from their last checkpoint",
            file=sys.stderr,
        )
        sys.exit(130)


def _axes_without_checks(argv: list[str]) -> dict[str, str] | None:
    """A sweep's axes for a command the checks leave to Hydra (e.g. --cfg job)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(_overrides_of(argv))
        cfg = compose_with_hydra(first_job(parsed))
    except Exception:
        return None
    multirun = _is_sweep(argv, cfg, parsed)
    return _axes_of(cfg, parsed) if multirun else None


def _is_sweep(argv: list[str], cfg: Any, parsed: list[Any]) -> bool:
    """-m, a preset in multirun mode, or a comma list (or range) on the command line."""
    return (
        "-m" in argv
        or "--multirun" in argv
        or cfg.hydra.mode == RunMode.MULTIRUN
        or any(o.is_sweep_override() for o in parsed)
    )


def _axes_of(cfg: Any, parsed: list[Any]) -> dict[str, str]:
    axes = {str(k): str(v) for k, v in (cfg.hydra.sweeper.get("params") or {}).items()}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            with contextlib.suppress(Exception):  # interval sweeps (optuna) have no list
                axes[key] = ",".join(str(v) for v in override.sweep_string_iterator())
        elif key in axes:
            axes[key] = str(override.value())
    return axes


def sweep_size(axes: dict[str, str]) -> int:
    if any("(" in v for v in axes.values()):  # interval sweeps (optuna): no count
        return 0
    return math.prod(len(v.split(",")) for v in axes.values()) if axes else 1


def _print_sweep_axes(axes: dict[str, str]) -> None:
    """With --cfg on a sweep: say what will run (its axes and job count) before the config
    of its first job, which is all Hydra prints."""
    size = sweep_size(axes)
    jobs = f"{size} jobs" if size else "jobs"
    print(f"# a sweep of {jobs} over: {'  '.join(f'{k}={v}' for k, v in axes.items())}")
    print("# the config below is its first job's")


def report_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="icnn-bench-report",
        description="Aggregate a sweep folder into summary.csv, table.md and figures.",
    )
    parser.add_argument("sweep_dir", type=Path, help="folder holding run folders (any depth)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: sweep_dir)"
    )
    parser.add_argument(
        "--under-test",
        default=None,
        metavar="METHOD",
        help="the method the paired section compares with every other (default: the lift "
        "where the sweep has it, else every pair); paired.csv and the leaderboard always "
        "hold every pair",
    )
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="draw a report folder (e.g. results/paper_1d) again from its compact run data "
        "(runs.csv, curves.csv.gz, densities.csv.gz), without the run folders",
    )
    args = parser.parse_args(argv)
    if args.sweep_dir.is_file():
        print(
            f"icnn-bench-report: {args.sweep_dir} is a file; give the sweep (or report) folder",
            file=sys.stderr,
        )
        sys.exit(2)
    from icnn_bench.report import make_report, redraw

    try:
        report = (redraw if args.redraw else make_report)(
            args.sweep_dir, args.out, under_test=args.under_test
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"icnn-bench-report: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        where = error.filename or args.out or args.sweep_dir
        why = error.strerror or _first_line(error)
        print(f"icnn-bench-report: cannot write to {where}: {why}", file=sys.stderr)
        sys.exit(1)
    _print_report(report)
