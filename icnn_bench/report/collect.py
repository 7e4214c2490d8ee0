"""Read a sweep folder's run folders (complete or not) into tables. Never reads W&B."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RESULT = "result.json"
CONFIG = "config.yaml"


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Folders below sweep_dir that hold a run: a result.json, or a config.yaml of a live run."""
    sweep_dir = Path(sweep_dir)
    dirs = {p.parent for p in sweep_dir.rglob(RESULT)} | {p.parent for p in sweep_dir.rglob(CONFIG)}
    return sorted(d for d in dirs if not d.name.startswith("."))


def collect_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run folder. Folders with no result.json yet have status 'running'."""
    rows = []
    for run_dir in find_run_dirs(sweep_dir):
        path = run_dir / RESULT
        if path.exists():
            try:
                row = json.loads(path.read_text())
            except json.JSONDecodeError:
                row = {"status": "unreadable"}
        else:
            row = {"status": "running"}
        row["run_dir"] = str(run_dir)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for key in ("target", "method", "model", "seed"):
        if key not in frame:
            frame[key] = None
    return frame.sort_values(["target", "method", "seed"], na_position="last").reset_index(
        drop=True
    )


def read_curves(runs: pd.DataFrame, filename: str = "metrics.csv") -> pd.DataFrame:
    """Concatenate each run's per-evaluation metrics, tagged with target/method/seed."""
    frames = []
    for run in runs.itertuples():
        path = Path(run.run_dir) / filename
        if not path.exists():
            continue
        try:
            curve = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        curve["target"], curve["method"], curve["seed"] = run.target, run.method, run.seed
        frames.append(curve)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
