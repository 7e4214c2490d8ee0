"""Reproduce every committed paper table in one command: each preset as a Hydra multirun on
all cores (joblib), its report into results/<name>, and a table of wall time per preset.

    python scripts/reproduce.py                      # everything (exact, then authors' regime)
    python scripts/reproduce.py --regime exact       # the exact-regime tables only
    python scripts/reproduce.py --only paper_1d      # one table
    python scripts/reproduce.py --field              # also the leaderboards, OT, authors_2d, ...
    python scripts/reproduce.py --dry-run            # the commands and an estimate of their
                                                     # time (committed runs' own), not run

Resumable like any sweep: run the same command again and finished runs are kept, the others
continue from their checkpoints (sweep folders under --runs, default runs/). The timings go
to results/reproduce.md (results/reproduce_partial.md for --only or --regime, and after each
sweep while it runs, so a reproduction cut short keeps what it measured). A report
folder that holds a finished report this command did not make from the same sweep folder (the
committed results/, say) is not overwritten without --force. `--extra` overrides are passed
to every sweep; their reports then go to <runs>/reports unless --results says otherwise (a
smoke test never touches results/): --extra trainer.steps=4 target=gumbel method=pgd,lift
seed=0.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Table:
    name: str  # results/<name>
    regime: str
    overrides: tuple[str, ...]


TABLES = [
    Table("paper_1d", "exact", ("experiment=paper_1d",)),
    Table("paper_latents", "exact", ("experiment=paper_latents",)),
    Table("synthetic_nd", "exact", ("experiment=synthetic_nd",)),
    Table("paper_ablation", "exact", ("experiment=paper_ablation",)),
    Table("paper_cpflow_toy", "exact", ("experiment=paper_cpflow_toy",)),
    Table("paper_tabular_cpflow", "exact", ("experiment=paper_tabular_cpflow",)),
    Table("paper_1d_authors", "authors", ("experiment=paper_1d", "regime=authors")),
    Table("paper_ablation_authors", "authors", ("experiment=paper_ablation_authors",)),
]
# beyond the paper's tables: the leaderboards and the ICNN's other jobs, each with the overrides
# its results/ README gives (the committed subsets of the larger presets)
FIELD_TABLES = [
    Table("leaderboard_1d", "exact", ("experiment=leaderboard_1d",)),
    Table("leaderboard_1d_authors", "authors", ("experiment=leaderboard_1d_authors",)),
    Table("leaderboard_latents", "exact", ("experiment=leaderboard_latents",)),
    Table("leaderboard_cpflow_toy", "exact", ("experiment=leaderboard_cpflow_toy",)),
    Table("leaderboard_mnist", "exact", ("experiment=leaderboard_mnist",)),
    Table("authors_2d", "exact", ("experiment=authors_2d",)),
    Table(
        "authors_tabular",
        "exact",
        ("experiment=authors_tabular", "model.width=128", "trainer.steps=2000"),
    ),
    Table(
        "leaderboard_ot_gaussian",
        "exact",
        ("experiment=ot_gaussian", "target.params.dim=2,8,32", "trainer.steps=1000"),
    ),
    Table(
        "leaderboard_ot_mixture",
        "exact",
        ("experiment=ot_mixture", "target.params.dim=2,8", "trainer.steps=1000"),
    ),
    Table(
        "leaderboard_ot_mixture_2000", "exact", ("experiment=ot_mixture", "target.params.dim=2,8")
    ),
]
# the exact regime with one of the authors' differences switched on (regime comparison), each
# swept exactly as results/regime_comparison's README says (3 seeds; the evaluation-batch
# switch applies to the lift only)
SWITCH_SWEEP = ("experiment=paper_1d", "target=gumbel,beta", "seed=0,1,2")
SWITCHES = {
    "learned-sampler log Z": ("method=pgd,softplus,lift", "log_z=learned_sampler"),
    "streaming data": ("method=pgd,softplus,lift", "data.stream=true"),
    "fresh evaluation batch": ("method=lift", "trainer.eval_pool=batch"),
    "their init and summary ReLU": (
        "method=pgd,softplus,lift",
        "model.free_init=xavier",
        "regime.free_bias_init=linear",
        "regime.summary_relu=true",
    ),
}


@dataclass
class Sweep:
    """One sweep of the reproduction and, for a table, the report folder it feeds."""

    name: str
    regime: str
    overrides: tuple[str, ...]
    report_to: Path | None
    seconds: float = 0.0
    code: int = 0
    began: str = ""  # date and time it started, and the load average then and at its end
    load: str = ""
    resumed: bool = False  # its sweep folder was there before: the time is only this part's
    done: bool = False  # it has ended (its report written)


def timing_row(s: Sweep) -> str:
    resumed = "yes" if s.resumed else "no"
    return (
        f"| {s.name} | {s.regime} | {s.began} | {s.seconds / 60:.1f} min | {s.load} | "
        f"{resumed} | {s.code} |"
    )


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def committed_seconds(sweep: Sweep, results: Path) -> list[float]:
    """Each committed run's own wall time (runs.csv wall_s) for this sweep's table; a switch
    sweep's from results/regime_comparison (its rows of that switch and those methods)."""
    import pandas as pd

    if sweep.name.startswith("switch: "):
        path = results / "regime_comparison" / "runs.csv"
    else:
        path = results / sweep.name / "runs.csv"
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    if sweep.name.startswith("switch: "):
        frame = frame[frame["regime"] == sweep.name.removeprefix("switch: ")]
        methods = next((o for o in sweep.overrides if o.startswith("method=")), "")
        frame = frame[frame["method"].isin(methods.removeprefix("method=").split(","))]
    return [float(x) for x in frame["wall_s"].dropna()]


def estimate(sweeps: list[Sweep], results: Path, jobs: int) -> str:
    """What the committed runs' own times say this command will take: an estimate (they
    were measured on 2 busy cores, some before later speed-ups), not a measurement."""
    lines = [
        "| table | runs | committed run time | on --jobs | longest run |",
        "|---|---:|---:|---:|---:|",
    ]
    total, longest = 0.0, 0.0
    for sweep in sweeps:
        seconds = committed_seconds(sweep, results)
        if not seconds:
            lines.append(f"| {sweep.name} | ? | (none committed) | | |")
            continue
        total, longest = total + sum(seconds), max(longest, max(seconds))
        lines.append(
            f"| {sweep.name} | {len(seconds)} | {sum(seconds) / 3600:.2f} h | "
            f"{sum(seconds) / jobs / 3600:.2f} h | {max(seconds) / 60:.1f} min |"
        )
    lines.append(
        f"| **all** | | **{total / 3600:.1f} h** | **{total / jobs / 3600:.1f} h** | "
        f"{longest / 60:.1f} min |"
    )
    return (
        f"Estimated from the committed runs' own wall times (results/*/runs.csv; an estimate: "
        f"measured with both cores busy, on the code of their day), {jobs} parallel jobs; "
        "on a cluster with a job per run it is about the longest run plus queueing:\n\n"
        + "\n".join(lines)
    )


def icnn_bench(*args: str) -> list[str]:
    return [sys.executable, "-c", "from icnn_bench.cli import main; main()", *args]


def report(*args: str) -> list[str]:
    return [sys.executable, "-c", "from icnn_bench.cli import report_main; report_main()", *args]


def run(command: list[str], dry: bool) -> tuple[float, int]:
    shown = " ".join(shlex.quote(c) for c in command[3:])
    program = "icnn-bench-report" if "report_main" in command[2] else "icnn-bench"
    print(f"$ {program} {shown}", flush=True)
    if dry:
        return 0.0, 0
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per job: jobs fill the cores
    code = subprocess.run(command, env=env, check=False).returncode
    return time.perf_counter() - started, code


def machine() -> str:
    """The CPU and software the times were measured on (the same code runs 2-3x apart on
    the machines this project is lent)."""
    from importlib.metadata import version

    from icnn_bench.timing import cpu_name

    return (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs, Python {sys.version.split()[0]}, "
        f"torch {version('torch')}, one thread per job"
    )


MADE_BY = ".made_by.json"  # in a report folder this script wrote: the sweep it came from


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs", help="sweep folders")
    parser.add_argument(
        "--results", type=Path, default=None,
        help="report folders (default: results/, or <runs>/reports with --extra)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel jobs")
    parser.add_argument("--regime", choices=("exact", "authors", "all"), default="all")
    parser.add_argument("--only", default=None, help="comma-separated table names")
    parser.add_argument(
        "--field", action="store_true",
        help="also the tables beyond the paper's (leaderboards, OT, authors_2d, MNIST, tabular)",
    )  # fmt: skip
    parser.add_argument("--extra", nargs="*", default=[], help="overrides for every sweep")
    parser.add_argument("--force", action="store_true", help="replace finished reports")
    parser.add_argument(
        "--launcher", default=None,
        help="submit every sweep at once through this Hydra launcher (e.g. slurm, slurm_gpu, "
        "submitit_local) and report each when it ends; default: one after another on this "
        "machine's cores (joblib)",
    )  # fmt: skip
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    known = [t.name for t in TABLES + FIELD_TABLES] + ["regime_comparison"]
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give at least 1")
    for name in (args.only or "").split(","):
        if name and name not in known:
            parser.error(f"--only {name!r}: no such table; choose from {', '.join(known)}")
    if args.results is None:
        args.results = args.runs / "reports" if args.extra else ROOT / "results"
    from icnn_bench.command_line import composition_problem, unknown_choice

    for table in TABLES[:1]:  # a broken --extra stops the command before any sweep
        launcher = [f"hydra/launcher={args.launcher}"] if args.launcher else []
        overrides = [*table.overrides, *launcher, *args.extra]
        problem = unknown_choice(overrides) or composition_problem(overrides)
        if problem and args.extra:
            parser.error(f"--extra: {problem}")
    return args


def refused_reports(args: argparse.Namespace, names: list[str]) -> list[str]:
    """Report folders holding a finished report that this script did not make from the
    same sweep folder (the committed results, another machine's): kept unless --force."""
    refused = []
    for name in names:
        out = args.results / name
        if args.force or not (out / "table.md").exists():
            continue
        try:
            made = json.loads((out / MADE_BY).read_text()).get("sweep")
        except (OSError, ValueError, AttributeError):
            made = None
        if made != str((args.runs / name).resolve()):
            refused.append(str(out))
    return refused


def folder(sweep: Sweep, args: argparse.Namespace) -> Path:
    return args.runs / sweep.name.replace("switch: ", "switch-").replace(" ", "_")


def command_of(sweep: Sweep, args: argparse.Namespace, launcher: list[str]) -> list[str]:
    return icnn_bench(
        *sweep.overrides,
        *launcher,
        "logger.progress=false",
        f"hydra.sweep.dir={folder(sweep, args)}",
        *args.extra,
    )


def report_of(sweep: Sweep, args: argparse.Namespace) -> None:
    """Its report into its results folder, marked as made from its sweep folder."""
    if sweep.report_to is None:
        return
    _, reported = run(report(str(folder(sweep, args)), "--out", str(sweep.report_to)), args.dry_run)
    made = {"sweep": str(folder(sweep, args).resolve())}
    if not args.dry_run and sweep.report_to.is_dir():
        (sweep.report_to / MADE_BY).write_text(json.dumps(made) + "\n")
    sweep.code = sweep.code or reported


def run_concurrently(
    sweeps: list[Sweep], args: argparse.Namespace, launcher: list[str], began: float
) -> None:
    """Start every sweep command at once (each submits its jobs and waits for them), and
    write each report as soon as its sweep ends: the whole reproduction takes the time of
    its longest sweep."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    running = {}
    for sweep in sweeps:
        command = command_of(sweep, args, launcher)
        sweep.resumed = folder(sweep, args).exists()
        sweep.began, sweep.load = time.strftime("%Y-%m-%d %H:%M"), load_average()
        print(f"$ icnn-bench {' '.join(shlex.quote(c) for c in command[3:])} &", flush=True)
        if not args.dry_run:
            running[sweep.name] = (sweep, subprocess.Popen(command, env=env))
    while running:
        for name, (sweep, process) in list(running.items()):
            code = process.poll()
            if code is None:
                continue
            sweep.seconds, sweep.code = time.perf_counter() - started, code
            sweep.load = f"{sweep.load} → {load_average()}"
            del running[name]
            report_of(sweep, args)
            sweep.done = True
            keep_progress(args, sweeps, False, began)
        time.sleep(1.0)


def timings_table(
    sweeps: list[Sweep], one_machine: bool, began: float, so_far=False, every_table=False
) -> str:
    """The timing rows of the sweeps that have ended, the regimes' sums and the time so far."""
    ended = [s for s in sweeps if s.done]
    lines = [
        "| table | regime | began | wall time | load (1/5/15 min) start → end | resumed | exit |",
        "|---|---|---|---:|---|---|---|",
        *(timing_row(s) for s in ended),
    ]
    if one_machine:
        for regime in ("exact", "authors"):
            total = sum(s.seconds for s in ended if s.regime == regime)
            if total:
                lines.append(f"| **all {regime}** | | | **{total / 60:.1f} min** | | | |")
    whole = (time.perf_counter() - began) / 60
    if so_far:
        label = "so far (this command)"
    else:
        label = "the whole reproduction" if every_table else "this command"
    lines.append(f"| **{label}** | | | **{whole:.1f} min** | | | |")
    return "\n".join(lines)


def keep_progress(args: argparse.Namespace, sweeps: list[Sweep], one_machine: bool, began: float):
    """After each sweep, the times so far to reproduce_partial.md: a reproduction cut short
    (a session's end, a dead machine) keeps what it measured."""
    if args.dry_run or args.extra:
        return
    ended = sum(s.done for s in sweeps)
    why = f"{ended} of {len(sweeps)} sweeps ended when this was written (stopped or still running)"
    text = timings_table(sweeps, one_machine, began, so_far=True)
    write_timings(args, sweeps, False, text, progress=why)


def write_timings(
    args: argparse.Namespace, sweeps: list[Sweep], all_tables: bool, text: str, progress: str = ""
) -> None:
    """reproduce.md only for every table in one go (none resumed, none failed); anything
    less to reproduce_partial.md, saying why, so it is never taken for the whole."""
    why = [progress] if progress else [] if all_tables else ["some of the tables"]
    if any(s.resumed for s in sweeps):
        why.append("resumed: a time covers only what ran in this command")
    if any(s.code for s in sweeps):
        why.append("a sweep failed (exit)")
    chosen = [f"--regime {args.regime}"] if args.regime != "all" else []
    chosen += [f"--only {args.only}"] if args.only else []
    chosen += ["--field"] if args.field else []
    header = (
        f"# Reproducing {'every table' if not why else 'the tables, in part'}\n\n"
        + (f"Not the whole reproduction in one go: {'; '.join(why)}.\n\n" if why else "")
        + f"`{' '.join(['python scripts/reproduce.py', *chosen])}` on {os.cpu_count()} cores "
        f"({args.jobs} parallel jobs), {time.strftime('%Y-%m-%d')}, on {machine()}:\n\n"
    )
    name = "reproduce_partial.md" if why else "reproduce.md"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / name).write_text(header + text + "\n")
    if not why:  # the whole one supersedes this command's own progress file
        (args.results / "reproduce_partial.md").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = set(args.only.split(",")) if args.only else None
    named_field = bool(only and only & {t.name for t in FIELD_TABLES})
    candidates = TABLES + (FIELD_TABLES if args.field or named_field else [])
    tables = [
        t
        for t in candidates
        if (args.regime in ("all", t.regime)) and (only is None or t.name in only)
    ]
    refused = refused_reports(args, [t.name for t in tables])
    if refused:
        print(
            f"reproduce.py: {refused[0]} holds a finished report this command did not make"
            f"{f' (and {len(refused) - 1} more)' if len(refused) > 1 else ''}; pass --force "
            "to replace it, or --results DIR for new report folders",
            file=sys.stderr,
        )
        if not args.dry_run:
            return 2
    begun = time.perf_counter()
    sweeps = [Sweep(t.name, t.regime, t.overrides, args.results / t.name) for t in tables]
    comparison = args.regime in ("all", "authors") and (only is None or "regime_comparison" in only)
    if comparison:
        sweeps += [
            Sweep(f"switch: {name}", "authors", (*SWITCH_SWEEP, *overrides), None)
            for name, overrides in SWITCHES.items()
        ]
    if args.launcher is None:  # this machine: one sweep after another, each on every core
        launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}"]
        for sweep in sweeps:
            sweep.resumed = folder(sweep, args).exists()
            sweep.began, load = time.strftime("%Y-%m-%d %H:%M"), load_average()
            sweep.seconds, sweep.code = run(command_of(sweep, args, launcher), args.dry_run)
            sweep.load = f"{load} → {load_average()}"
            report_of(sweep, args)
            sweep.done = True
            keep_progress(args, sweeps, True, begun)
    else:  # a cluster: every sweep submitted at once, each reported as soon as it ends
        run_concurrently(sweeps, args, [f"hydra/launcher={args.launcher}"], begun)
    failed_comparison = False
    if comparison:
        switched = [
            arg
            for sweep in sweeps
            if sweep.name.startswith("switch: ")
            for arg in ("--switch", f"{sweep.name.removeprefix('switch: ')}={folder(sweep, args)}")
        ]
        exact = args.runs / "paper_1d"
        if not exact.is_dir():  # --regime authors: our side from the committed table
            exact = ROOT / "results" / "paper_1d"
            print(
                f"regime comparison: the exact regime's runs from {exact.name}'s committed "
                "runs.csv (this command did not run them)",
                flush=True,
            )
        command = [
            sys.executable,
            str(ROOT / "scripts" / "regime_comparison.py"),
            "--exact", str(exact),
            "--authors", str(args.runs / "paper_1d_authors"),
            *switched,
            "--out", str(args.results / "regime_comparison"),
        ]  # fmt: skip
        print("$ python scripts/regime_comparison.py ...", flush=True)
        if not args.dry_run:
            code = subprocess.run(command, check=False, stdout=subprocess.DEVNULL).returncode
            if code:
                print(
                    f"reproduce.py: the regime comparison failed (exit {code}); every "
                    "sweep and report above is kept",
                    file=sys.stderr,
                    flush=True,
                )
                failed_comparison = True
    if args.dry_run:
        print("\n" + estimate(sweeps, ROOT / "results", args.jobs))
        if args.extra:
            print("(for the committed configurations: --extra changes what will run)")
        return 0
    for sweep in sweeps:
        sweep.done = True
    every_table = only is None and args.regime == "all" and not args.extra
    text = timings_table(sweeps, args.launcher is None, begun, every_table=every_table)
    print("\n" + text)
    if not args.dry_run and not args.extra:
        write_timings(args, sweeps, every_table, text)
    return 1 if any(s.code for s in sweeps) or failed_comparison else 0


if __name__ == "__main__":
    sys.exit(main())
