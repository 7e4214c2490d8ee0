"""Command-line entry points. The only module (with conf/) that knows about Hydra."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from icnn_bench import registry, runner
from icnn_bench.errors import ConfigError
from icnn_bench.sinks.base import Sink
from icnn_bench.sinks.console import ConsoleSink

CONF_DIR = registry.PACKAGE_CONF
GROUPS = ("target", "model", "log_z", "method", "trainer", "logger", "experiment")
HYDRA_GROUPS = {  # plugin-provided groups: what to install when a choice is missing
    "hydra/launcher": "launchers joblib, submitit_local, submitit_slurm: "
    "pip install 'icnn-bench[cluster]'",
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


def composition_problem(argv: list[str]) -> str | None:
    """One line for overrides Hydra cannot compose (a misspelt key, bad override syntax),
    found before any job starts; sweeps are checked at their first value."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    argv = _without_config_dir(argv)
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in argv):
        return None  # other Hydra flags (--cfg, -cn, ...): Hydra reports on its own
    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as error:
        return f"cannot parse the overrides: {_first_line(error)}"
    first = []
    for override in parsed:
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        with contextlib.suppress(Exception):  # interval sweeps (optuna) have no first value
            value = next(iter(override.sweep_string_iterator()))
            first.append(f"{override.get_key_element()}={value}")
    searchpath = [f"file://{folder}" for folder in registry.search_dirs()[:-1]]
    if searchpath and not any(o.startswith("hydra.searchpath=") for o in first):
        first.append(f"hydra.searchpath=[{','.join(searchpath)}]")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            compose("config", overrides=first, return_hydra_config=True)
        except Exception as error:
            return _misspelt_key(error, first) or _first_line(error)
    return None


def _misspelt_key(error: Exception, overrides: list[str]) -> str | None:
    """`no setting trainer.stpes; did you mean trainer.steps?` for an unknown key."""
    match = re.match(r"Could not override '([^']+)'", str(error))
    if match is None:
        return None
    from hydra import compose

    key = match.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")]
    try:
        node = compose("config", overrides=rest)
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:
        node = None
    names = list(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, [str(n) for n in names], n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return f"no setting {key}; {hint}(to add a new key use +{key}=...)"


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


def run_task(cfg: DictConfig) -> float | None:
    """One Hydra job = one run folder."""
    hydra_cfg = HydraConfig.get()
    _register_job_config_dirs(hydra_cfg)
    run_dir = Path(hydra_cfg.runtime.output_dir)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        sinks = make_sinks(config, run_dir, sweep_group(hydra_cfg, config.get("experiment_name")))
    except ConfigError as error:  # e.g. logger.mode=bogus: one line, before any training
        print(f"icnn-bench: {error}", file=sys.stderr)
        sys.exit(2)
    if config.get("seeds") is not None:
        return _run_seeds(config, run_dir, hydra_cfg)
    try:
        result = runner.run(config, run_dir, sinks)
    except ConfigError as error:  # the run folder holds another run's work: left untouched
        return _refused(error, hydra_cfg)
    if hydra_cfg.mode == RunMode.RUN:
        print(f"run folder: {run_dir}")
        if result["status"] != "ok":
            sys.exit(1)
    value = result.get("val_nll")
    # the objective a sweeper (e.g. optuna) minimises: a run that did not finish is worst
    return float(value) if result["status"] == "ok" and value is not None else math.inf


def _run_seeds(config: dict[str, Any], job_dir: Path, hydra_cfg: Any) -> float:
    """A job holding every seed of its cell (`seeds=[...]`): one run folder per seed below
    the job folder; returns the mean validation NLL of the finished seeds."""
    from icnn_bench.runner import run_seeds

    group = sweep_group(hydra_cfg, config.get("experiment_name"))
    try:
        results = run_seeds(config, job_dir, lambda cfg, run_dir: make_sinks(cfg, run_dir, group))
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


def make_sinks(config: dict[str, Any], run_dir: Path, group: str | None = None) -> list[Sink]:
    """The sinks `config["logger"]` asks for next to the run folder's files (always written):
    the console line, and with `logger=wandb` a W&B run; `group` is its W&B group unless the
    logger config names one."""
    logger = config.get("logger") or {}
    sinks: list[Sink] = [ConsoleSink(progress=logger.get("progress", "auto"))]
    if logger.get("name") == "wandb":
        from icnn_bench.sinks.wandb import WandbSink

        options = ("project", "entity", "tags", "job_type", "mode", "dir", "init_timeout")
        settings = {key: logger[key] for key in options if logger.get(key) is not None}
        group = logger.get("group") if logger.get("group") is not None else group
        sinks.append(WandbSink(config, run_dir, group=group, **settings))
    return sinks


class ReportCallback(Callback):
    """After a multirun, aggregate its sweep folder and print the comparison table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from icnn_bench.report import make_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = make_report(sweep_dir)
        except FileNotFoundError as error:
            print(f"icnn-bench: no report: {error}", file=sys.stderr)
            return
        _print_report(report)


def _print_report(report) -> None:
    print()
    print(_first_table(report.table_markdown))
    if report.verdicts:
        print()
        print("\n".join(report.verdicts))
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
    for folder in config_dirs(sys.argv[1:]):
        registry.add_search_dir(folder)
    problem = unknown_choice(sys.argv[1:]) or composition_problem(sys.argv[1:])
    if problem is not None:
        print(f"icnn-bench: {problem}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


def report_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="icnn-bench-report",
        description="Aggregate a sweep folder into summary.csv, table.md and figures.",
    )
    parser.add_argument("sweep_dir", type=Path, help="folder holding run folders (any depth)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: sweep_dir)"
    )
    args = parser.parse_args(argv)
    from icnn_bench.report import make_report

    try:
        report = make_report(args.sweep_dir, args.out)
    except FileNotFoundError as error:
        print(f"icnn-bench-report: {error}", file=sys.stderr)
        sys.exit(2)
    _print_report(report)
