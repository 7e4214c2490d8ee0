"""Where a report's per-run files come from: the run folders themselves, or the compact copy
of them a report writes next to its tables (so that a results/ folder can be redrawn after a
change to the plotting code, without the run folders)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from icnn_bench.errors import DataError
from icnn_bench.run_folder import DENSITY, DWELL, TRANSPORT_MAP, read_table

CURVES = "curves.csv.gz"  # every metrics.csv row of every run, with its run's name
DENSITIES = "densities.csv.gz"  # every run's density.csv (d <= 2)
TRANSPORT_MAPS = "transport_maps.csv.gz"  # every 2-D OT run's transport_map.csv
DWELLS = "dwell.csv.gz"  # every run's dwell.csv
RUN = "run"  # the key column: a run folder's path relative to the sweep folder


class RunFiles:
    """The per-run tables the figures draw, read from each run folder."""

    def density(self, run_dir: str) -> pd.DataFrame | None:
        return read_table(Path(run_dir), DENSITY)

    def dwell(self, run_dir: str) -> pd.DataFrame | None:
        return read_table(Path(run_dir), DWELL)

    def transport_map(self, run_dir: str) -> pd.DataFrame | None:
        return read_table(Path(run_dir), TRANSPORT_MAP)


class CompactFiles(RunFiles):
    """The same tables from a report folder's compact copies (keyed by run name); a copy
    that is there but cannot be read raises DataError naming it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        names = (DENSITIES, DWELLS, TRANSPORT_MAPS)
        self._tables = {name: _grouped(self.folder / name) for name in names}

    def density(self, run_dir: str) -> pd.DataFrame | None:
        return self._tables[DENSITIES].get(_name(self.folder, run_dir))

    def dwell(self, run_dir: str) -> pd.DataFrame | None:
        return self._tables[DWELLS].get(_name(self.folder, run_dir))

    def transport_map(self, run_dir: str) -> pd.DataFrame | None:
        return self._tables[TRANSPORT_MAPS].get(_name(self.folder, run_dir))


def write_compact(
    out_dir: Path, sweep_dir: Path, runs: pd.DataFrame, curves: pd.DataFrame
) -> list[Path]:
    """The report folder's copy of what its figures need from the run folders."""
    from icnn_bench import io

    written = []
    names = {d: _name(sweep_dir, d) for d in runs["run_dir"]}
    if not curves.empty:
        path = Path(out_dir) / CURVES
        io.write_csv_gz(
            path, curves.assign(**{RUN: curves["run_dir"].map(names)}).drop(columns="run_dir")
        )
        written.append(path)
    files = RunFiles()
    ok = runs[runs["status"] == "ok"]
    readers = ((DENSITIES, files.density), (DWELLS, files.dwell))
    for file_name, read in (*readers, (TRANSPORT_MAPS, files.transport_map)):
        tables = []
        for run_dir in ok["run_dir"]:
            table = read(run_dir)
            if table is not None:
                tables.append(table.assign(**{RUN: names[run_dir]}))
        if tables:
            path = Path(out_dir) / file_name
            io.write_csv_gz(path, pd.concat(tables, ignore_index=True))
            written.append(path)
    return written


def _name(root: Path, run_dir: str) -> str:
    try:
        return str(Path(run_dir).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(run_dir)


def _grouped(path: Path) -> dict[str, pd.DataFrame]:
    if not path.exists():
        return {}
    table = read_report_table(path, [RUN])
    return {name: group.drop(columns=RUN) for name, group in table.groupby(RUN, sort=False)}


def read_report_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A report folder's table (csv or csv.gz) with the columns it must have; DataError
    naming the file if it is damaged (truncated, empty, not a table, columns missing)."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as error:
        # pandas' EmptyDataError and ParserError are ValueErrors; gzip's damage is OSError
        raise DataError(f"{path} cannot be read ({type(error).__name__}: {error})") from None
    missing = [c for c in columns if c not in table]
    if missing:
        raise DataError(f"{path} is not a report table: no column {', '.join(missing)}")
    return table
