"""The two entry points, `icnn-bench` and `icnn-bench-report` (Hydra lives here, in
command_line.py, job.py, compose.py and conf/)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import hydra

from icnn_bench import registry
from icnn_bench.command_line import (
    Command,
    config_dirs,
    first_line,
    inspect_command,
    print_sweep_plan,
    sweep_or_preview,
    sweep_size,
    unknown_choice,
)
from icnn_bench.errors import ConfigError
from icnn_bench.job import print_report, run_task
from icnn_bench.sweep_state import this_process

CONF_DIR = registry.PACKAGE_CONF

_hydra_main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(
    run_task
)


def main() -> None:
    sweep = this_process()  # local jobs in other processes (joblib, submitit_local) watch it
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
        print_sweep_plan(axes)
    sys.argv = [sys.argv[0], *sweep_or_preview(sys.argv[1:])]
    if axes is not None:  # each run's "k of N runs, ETA" line; its name: what varies
        varying = [k for k, v in axes.items() if "," in v or "(" in v]
        sweep = sweep.launched_sweep(sweep_size(axes), varying)
    sweep.to_environ()
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
        why = error.strerror or first_line(error)
        print(f"icnn-bench-report: cannot write to {where}: {why}", file=sys.stderr)
        sys.exit(1)
    print_report(report)
