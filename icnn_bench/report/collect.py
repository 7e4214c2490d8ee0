"""Read a sweep folder's run folders (complete or not) into tables. Never reads W&B."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from icnn_bench.run_folder import (
    CONFIG,
    METRICS,
    RESULT,
    flat_config,
    is_run_config,
    overridden_keys,
    read_config,
    read_result,
    read_table,
)


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Folders below sweep_dir that look like run folders: a result.json, or a config.yaml
    that names a target, a model and a method (a run still training). Hidden folders (Hydra's
    .hydra, caches) and W&B's own folders are not runs."""
    sweep_dir = Path(sweep_dir)
    found = {p.parent for p in sweep_dir.rglob(RESULT)}
    found |= {p.parent for p in sweep_dir.rglob(CONFIG) if is_run_config(read_config(p.parent))}
    return sorted(
        d
        for d in found
        if not d.name.startswith(".")
        # W&B keeps a copy of the run's config under <run>/wandb/run-*/files/
        and "wandb" not in d.relative_to(sweep_dir).parts
    )


def collect_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run folder. Folders with no result.json yet have status 'running'; one
    whose result.json cannot be read is 'unreadable' (named from its folder and config)."""
    rows = []
    for run_dir in find_run_dirs(sweep_dir):
        path = run_dir / RESULT
        config = flat_config(run_dir)
        named = {
            "target": _str_or_none(config.get("target.name")),
            "model": _str_or_none(config.get("model.name")),
            "method": _str_or_none(config.get("method.name")),
            "seed": _int_or_none(config.get("seed")),
        }
        if path.exists():
            row = read_result(path) or {**named, "status": "unreadable"}
        else:  # started, not finished: name it from its config
            row = {**named, "status": "running"}
        row.setdefault("regime", _str_or_none(config.get("regime.name")))  # older results
        row["run_dir"] = str(run_dir)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for key in ("target", "method", "model", "seed"):
        if key not in frame:
            frame[key] = None
    swept = swept_settings(list(frame["run_dir"]), frame)
    for key in sorted({k for settings in swept for k in settings}):
        frame[key] = pd.Series([settings.get(key) for settings in swept], dtype=object)
    order = ["target", "method", *swept_columns(frame), "seed"]
    return frame.sort_values(order, key=_sortable, na_position="last").reset_index(drop=True)


def swept_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a runs table that hold a swept setting: config keys, dotted
    (`trainer.lr`, `method.body`); a result's own fields have no dots."""
    return sorted(str(c) for c in frame.columns if "." in str(c))


def _sortable(column: pd.Series) -> pd.Series:
    """Sort keys for a mixed-type column (a list-valued setting, None): its text."""
    present = column.dropna()
    if column.dtype != object or all(isinstance(v, int | float) for v in present):
        return column
    return column.map(lambda v: "" if v is None else str(v))


_NOT_A_VARIANT = ("seed", "data.seed", "device", "deterministic")


def swept_settings(run_dirs: list[str], frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per run, the config settings that differ between runs of one (target, method) cell
    other than the seed, typed as the config has them ({"trainer.lr": 0.01, "method.body":
    [8, 8, 12]}): a sweep over them must not be averaged into one cell.

    When every run has Hydra's record of its command-line overrides, only overridden settings
    count, so that runs of one preset made by different versions of a config (a new key with
    a default, say) still pool; without that record every differing setting counts."""
    configs = [flat_config(Path(d)) for d in run_dirs]
    keys = sorted({k for c in configs for k in c if k not in _NOT_A_VARIANT})
    overridden = [overridden_keys(Path(d)) for d in run_dirs]
    if all(o is not None for o in overridden):
        swept = set().union(*overridden)
        keys = [k for k in keys if k in swept]
    varying = []
    for key in keys:
        values: dict[tuple, set] = {}
        for config, target, method in zip(configs, frame["target"], frame["method"], strict=True):
            values.setdefault((target, method), set()).add(repr(config.get(key)))
        if any(len(v) > 1 for v in values.values()):
            varying.append(key)
    return [{k: c.get(k) for k in varying} for c in configs]


def read_curves(runs: pd.DataFrame, filename: str = METRICS) -> pd.DataFrame:
    """Concatenate each run's per-evaluation metrics, tagged with target/method/seed."""
    frames = []
    for run in runs.itertuples():
        curve = read_table(Path(run.run_dir), filename)
        if curve is None or "step" not in curve or curve.empty:
            continue
        curve["step"] = pd.to_numeric(curve["step"], errors="coerce")
        curve = curve.dropna(subset=["step"])
        curve["target"], curve["method"], curve["seed"] = run.target, run.method, run.seed
        curve["run_dir"] = run.run_dir
        frames.append(curve)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def typed_swept(runs: pd.DataFrame) -> pd.DataFrame:
    """The swept columns with their values' types: as collected, or read back from a
    runs.csv (where a list is text, "[8, 8, 12]"); one dtype per column where the values
    share one (bool, integer, float), else Python objects."""
    runs = runs.copy()
    for key in swept_columns(runs):
        values = [_parsed(v) for v in runs[key]]
        runs[key] = pd.Series(values, index=runs.index, dtype=_dtype(values))
    return runs


def _parsed(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value.item() if hasattr(value, "item") else value


def _dtype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float64"
    return "object"


def setting_label(settings: dict[str, Any]) -> str:
    """`trainer.lr=0.01, method.body=[8, 8, 12]`: for titles and column labels only (the
    values themselves stay in their columns)."""
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def swept_of(row: Any, columns: list[str]) -> dict[str, Any]:
    """A run's swept settings that it has (not None)."""
    out = {}
    for key in columns:
        value = row.get(key) if isinstance(row, dict) else getattr(row, key, None)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if value is pd.NA:
            continue
        out[key] = value
    return out
