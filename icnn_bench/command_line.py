"""The checks a command line gets before any job: names that exist, overrides Hydra can
compose, a writable output folder, a reachable launcher and, for a sweep, the settings no run
could pass; plus what a sweep varies (its axes and size)."""

from __future__ import annotations

import contextlib
import difflib
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from icnn_bench import registry, runner
from icnn_bench.compose import compose_with_hydra
from icnn_bench.errors import ConfigError, DataError

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
        return Command(f"cannot parse the overrides: {first_line(error)}")
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
    line = first_line(error)
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    if any(key and key in line for key in keys):
        return line
    for count in range(1, len(overrides) + 1):  # the first prefix that fails: its last one
        try:
            compose_with_hydra(overrides[:count])
        except Exception:
            return f"{overrides[count - 1]}: {line}"
    return line


def first_line(error: Exception) -> str:
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


def print_sweep_plan(axes: dict[str, str]) -> None:
    """With --cfg on a sweep: say what will run (its axes and job count) before the config
    of its first job, which is all Hydra prints."""
    size = sweep_size(axes)
    jobs = f"{size} jobs" if size else "jobs"
    print(f"# a sweep of {jobs} over: {'  '.join(f'{k}={v}' for k, v in axes.items())}")
    print("# the config below is its first job's")
