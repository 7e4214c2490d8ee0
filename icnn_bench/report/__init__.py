"""Sweep folder -> summary.csv, runs.csv, table.md and figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from icnn_bench import io
from icnn_bench.errors import DataError
from icnn_bench.report.collect import (
    collect_runs,
    read_curves,
    setting_label,
    swept_columns,
    swept_of,
    typed_swept,
)
from icnn_bench.report.data import (
    CURVES,
    RUN,
    CompactFiles,
    RunFiles,
    read_report_table,
    write_compact,
)
from icnn_bench.report.figures import (
    cd_figure,
    curve_figure,
    density_figure,
    dimension_figure,
    dwell_figure,
    heatmap_figure,
    loss_figure,
    transport_figure,
    with_entropy_gap,
)
from icnn_bench.report.ranks import Leaderboard, leaderboard, leaderboard_markdown
from icnn_bench.report.tables import (
    comparison_latex,
    comparison_markdown,
    paired_comparisons,
    shown_pairs,
    summarise,
    under_test_labels,
    wins_lines,
)
from icnn_bench.run_folder import REPORT_LOCK, modified, owned


@dataclass
class Report:
    out_dir: Path
    n_runs: int
    table_markdown: str
    files: list[Path] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # method under test vs each other
    under_test: list[str] = field(default_factory=list)  # its columns ([]: every pair)
    leaderboard: Leaderboard | None = None
    unfinished: dict[str, int] = field(default_factory=dict)  # skipped runs by status
    n_ok: int = 0
    failures: list[str] = field(default_factory=list)  # the error of each failed/diverged run

    def failure_line(self) -> str:
        """'24 of 24 runs failed: <the commonest error> (24 times)'."""
        errors = pd.Series(self.failures).fillna("(no error recorded)")
        commonest, times = errors.value_counts().index[0], int(errors.value_counts().iloc[0])
        return (
            f"{len(self.failures)} of {self.n_runs} runs failed or diverged; the commonest "
            f"error ({times}x): {commonest}"
        )


def make_report(
    sweep_dir: Path, out_dir: Path | None = None, under_test: str | None = None
) -> Report:
    """Aggregate every run folder below sweep_dir; writes into out_dir (default: sweep_dir).
    `under_test`: the method the paired section compares with every other (default: the
    lift where the sweep has it, else every pair is shown)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {sweep_dir} does not exist")
    out_dir = Path(out_dir) if out_dir is not None else sweep_dir
    runs = collect_runs(sweep_dir)
    if runs.empty:
        raise FileNotFoundError(
            f"no run folders below {sweep_dir} (a run folder holds a result.json, or the "
            "config.yaml of a run in progress)"
        )
    runs = label_variants(runs)
    runs, dropped = drop_duplicates(runs)
    curves = read_curves(runs)
    with owned(out_dir, "report folder", REPORT_LOCK):
        report = write_report(runs, curves, RunFiles(), out_dir, sweep_dir, dropped, under_test)
        report.files += write_compact(out_dir, sweep_dir, runs, curves)
    return report


def redraw(folder: Path, out_dir: Path | None = None, under_test: str | None = None) -> Report:
    """The tables and figures of a report folder drawn again from its compact run data
    (runs.csv, curves.csv.gz, densities.csv.gz, dwell.csv.gz, transport_maps.csv.gz): no run
    folders needed. A folder with a runs.csv only (made before reports kept their run data) gets
    its tables rebuilt; its figures stay as they were drawn."""
    folder = Path(folder)
    runs_path = folder / "runs.csv"
    if not runs_path.exists():
        raise FileNotFoundError(f"{folder} holds no runs.csv: not a report folder")
    runs = read_report_table(runs_path, ["target", "method", "seed", "status"])
    if runs.empty:
        raise DataError(f"{runs_path} holds no runs")
    if RUN not in runs:  # an older report: its runs named by their (absolute) folders
        runs[RUN] = [Path(str(d)).name for d in runs.get("run_dir", runs.index.astype(str))]
    unnamed = int(runs[RUN].isna().sum())
    if unnamed:  # e.g. scripts/regime_comparison.py's folder, which merges other folders' rows
        raise FileNotFoundError(
            f"{runs_path}: {unnamed} of {len(runs)} rows name no run, so their run data cannot "
            "be found: not a folder icnn-bench-report wrote (redraw it with the script that "
            "made it)"
        )
    runs["run_dir"] = [str(folder / name) for name in runs[RUN]]
    # an older report's joined "k=v,k=v" strings: its typed columns say the same
    runs = typed_swept(runs.drop(columns=["variant"], errors="ignore"))
    if (folder / CURVES).exists():
        curves = read_report_table(folder / CURVES, [RUN, "step"])
        curves["run_dir"] = [str(folder / name) for name in curves[RUN]]
        keys = runs.set_index("run_dir")[["target", "method", "seed"]]
        curves = curves.drop(columns=[c for c in ("target", "method", "seed") if c in curves])
        curves = curves.join(keys, on="run_dir")
    else:
        print(f"{folder}: no {CURVES} (an older report): tables rebuilt, figures kept as drawn")
        curves = pd.DataFrame()
    out_dir = Path(out_dir) if out_dir is not None else folder
    store = CompactFiles(folder)
    with owned(out_dir, "report folder", REPORT_LOCK):
        return write_report(runs, curves, store, out_dir, folder, runs.iloc[0:0], under_test)


def write_report(
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    store: RunFiles,
    out_dir: Path,
    root: Path,
    dropped: pd.DataFrame,
    under_test: str | None = None,
) -> Report:
    """summary.csv, paired.csv, runs.csv, table.md, table.tex, the leaderboard (ranks.csv,
    wins.csv) and the figures; `root`: the folder the runs' names in runs.csv are relative to.
    Raises ValueError for an `under_test` the sweep does not have."""
    name = Path(root).name
    summary = summarise(runs)
    tested = under_test_labels(runs, under_test)
    paired = paired_comparisons(runs, under_test)
    shown = shown_pairs(paired, runs, under_test)
    board = leaderboard(runs, paired)
    regimes = sorted(set(runs.get("regime", pd.Series(dtype=object)).dropna()) - {"exact"})
    title = f"icnn-bench comparison: {name}"
    if regimes:  # a regime other than ours says so wherever the table goes
        title += f" (training regime: {', '.join(regimes)})"
    sections = [leaderboard_markdown(board)] if board is not None else []
    markdown = comparison_markdown(
        summary, title, shown, notes=_notes(runs, dropped), sections=sections
    )
    names = ("runs.csv", "summary.csv", "paired.csv", "table.md", "table.tex")
    files = [out_dir / name for name in names]
    written = runs.copy()  # swept settings in typed columns of their own
    written[RUN] = [_relative(root, d) for d in written["run_dir"]]
    io.write_csv(files[0], written.drop(columns="run_dir"))  # `run` names it, relative
    io.write_csv(files[1], summary)
    io.write_csv(files[2], paired)
    io.write_text(files[3], markdown)
    io.write_text(files[4], comparison_latex(summary, shown, title))
    if board is not None:
        files += [out_dir / "ranks.csv", out_dir / "wins.csv"]
        io.write_csv(files[-2], board.ranks.reset_index())
        io.write_csv(files[-1], board.wins)
    else:
        for stale in ("ranks.csv", "wins.csv"):
            (out_dir / stale).unlink(missing_ok=True)
    made = [
        *loss_figure(with_entropy_gap(curves, runs), out_dir / "loss_curves.png"),
        curve_figure(
            curves,
            "dead_frac",
            "dead fraction",
            out_dir / "dead_fraction.png",
            caption="each method's own definition: pgd and relu, the share of constrained "
            "entries at or below 0 (no gradient on that side); softplus-type methods and the "
            "lift, the share on the shoulder (sigmoid(u) < 0.05, a vanishing gradient); negexp, "
            "exp(V) < 0.05; exp, none (dW/dV = W > 0); penalty, the share negative (zeroed by "
            "the projection the evaluated model gets)",
        ),
        density_figure(runs, out_dir / "densities.png", store),
        transport_figure(runs, out_dir / "transport_maps.png", store),
        heatmap_figure(runs, out_dir / "densities_2d.png", store),
        dimension_figure(
            runs.assign(run=written[RUN].to_numpy()),
            out_dir / "by_dimension.png",
            _optional_table(out_dir / "recheck_log_z.csv"),
        ),
        dwell_figure(runs, out_dir / "shoulder_dwell.png", store),
        cd_figure(board, out_dir / "cd_diagram.png"),
        curve_figure(
            curves,
            "sigma_jac2",
            "σ²_Jac (cross-covariance trace)",
            out_dir / "sigma_jac2.png",
            symlog=True,  # large at the start, ~1e-4 and of either sign later: both must show
            linthresh=1e-5,
            caption="the probe's σ²_Jac on a log axis (symmetric-log, linear within ±1e-5, where "
            "values reach zero or below); line: median over seeds, band: inter-quartile range",
        ),
    ]
    files += [p for p in made if p is not None]
    if isinstance(store, RunFiles) and not isinstance(store, CompactFiles):
        # from run folders, a figure this report cannot draw is gone, not left stale; a
        # redraw keeps what an older folder's data cannot draw again (said on the console)
        for stale in set(FIGURES) - {p.name for p in made if p is not None}:
            (out_dir / stale).unlink(missing_ok=True)
    return Report(
        out_dir=out_dir,
        n_runs=len(runs),
        table_markdown=markdown,
        files=files,
        verdicts=wins_lines(shown),
        under_test=tested,
        leaderboard=board,
        unfinished={
            status: int((runs["status"] == status).sum())
            for status in ("running", "interrupted", "unreadable")
            if (runs["status"] == status).any()
        },
        n_ok=int((runs["status"] == "ok").sum()),
        failures=[
            str(e) if isinstance(e, str) else None
            for e in runs.loc[runs["status"].isin(("failed", "diverged")), "error"]
        ]
        if "error" in runs
        else [],
    )


FIGURES = (  # every figure a report may draw (one it cannot draw this time is removed)
    "loss_curves.png",
    "loss_curves_nll_entropy.png",
    "loss_curves_nll.png",
    "dead_fraction.png",
    "densities.png",
    "densities_2d.png",
    "transport_maps.png",
    "by_dimension.png",
    "shoulder_dwell.png",
    "cd_diagram.png",
    "sigma_jac2.png",
)


def _optional_table(path: Path) -> pd.DataFrame | None:
    """A table a script added to the report folder (recheck_log_z.csv), if it is there."""
    return read_report_table(path, []) if path.exists() else None


def _relative(root: Path, run_dir: str) -> str:
    try:
        return str(Path(run_dir).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return Path(run_dir).name


DUPLICATE_RULE = "the newest finished (ok) run of each, else the newest"


def drop_duplicates(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run per (target, method, seed) cell label: a folder holding two sweeps of the same
    cells would otherwise count a cell's seed twice. Keeps DUPLICATE_RULE; returns the kept
    runs and the dropped ones."""
    if runs.empty:
        return runs, runs.iloc[0:0]
    frame = runs.copy()
    frame["_ok"] = frame["status"] == "ok"
    frame["_time"] = [modified(Path(d)) for d in frame["run_dir"]]
    keys = ["target", "method", "seed"]  # the labels hold the swept settings
    frame = frame.sort_values(["_ok", "_time"], ascending=False, kind="stable")
    duplicated = frame.duplicated(subset=keys, keep="first") & frame["seed"].notna()
    kept = frame[~duplicated].drop(columns=["_ok", "_time"])
    dropped = frame[duplicated].drop(columns=["_ok", "_time"])
    kept = kept.sort_values(keys, na_position="last").reset_index(drop=True)
    return kept, dropped


def _notes(runs: pd.DataFrame, dropped: pd.DataFrame) -> list[str]:
    notes = []
    unreadable = runs[runs["status"] == "unreadable"]
    if len(unreadable):
        names = ", ".join(Path(d).name for d in unreadable["run_dir"])
        notes.append(
            f"{len(unreadable)} run folder(s) with an unreadable result.json, not counted "
            f"in any cell: {names}"
        )
    if "sampler_note" in runs:
        noted = runs[runs["sampler_note"].notna() & (runs["status"] == "ok")]
        if len(noted):
            notes.append(
                f"{len(noted)} of {int((runs['status'] == 'ok').sum())} runs say their "
                "learned sampler fell short of its KL threshold or behind the EBM in some "
                "steps, so those steps' training losses are not trustworthy (sampler_note in "
                "runs.csv; evaluation is exact and unaffected)"
            )
    if len(dropped):
        names = ", ".join(Path(d).name for d in dropped["run_dir"])
        notes.append(
            f"{len(dropped)} duplicate run(s) of a cell and seed left out (kept "
            f"{DUPLICATE_RULE}): {names}"
        )
    return notes


def label_variants(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs differing in more than the seed get their own cell: settings of the data
    (target.*, data.*) label the row, "digits_latents [target.params.latent_dim=8]"; any
    other setting labels the column, "lift [trainer.lr=0.01]". The settings stay in their
    own typed columns; the labels are for reading."""
    runs = typed_swept(runs)
    runs["target_name"], runs["method_name"] = runs["target"], runs["method"]
    columns = swept_columns(runs)
    data = [c for c in columns if _is_data_key(c)]
    other = [c for c in columns if not _is_data_key(c)]
    records = runs.to_dict("records")
    for column, keys in (("target", data), ("method", other)):
        labels = []
        for name, record in zip(runs[column], records, strict=True):
            settings = swept_of(record, keys)
            labels.append(f"{name} [{setting_label(settings)}]" if settings else name)
        runs[column] = labels
    return runs


def _is_data_key(setting: str) -> bool:
    return setting.startswith(("target.", "data."))


__all__ = ["Report", "make_report", "redraw"]
