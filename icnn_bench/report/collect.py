"""Read a sweep folder's run folders (complete or not) into tables. Never reads W&B."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

RESULT = "result.json"
CONFIG = "config.yaml"


STATUSES = ("ok", "diverged", "failed", "interrupted")
NAMES = ("target", "model", "method")  # strings in a readable result.json


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Folders below sweep_dir that look like run folders: a result.json, or a config.yaml
    that names a target, a model and a method (a run still training). Hidden folders (Hydra's
    .hydra, caches) and W&B's own folders are not runs."""
    sweep_dir = Path(sweep_dir)
    found = {p.parent for p in sweep_dir.rglob(RESULT)}
    found |= {p.parent for p in sweep_dir.rglob(CONFIG) if _is_run_config(p)}
    return sorted(
        d
        for d in found
        if not d.name.startswith(".")
        # W&B keeps a copy of the run's config under <run>/wandb/run-*/files/
        and "wandb" not in d.relative_to(sweep_dir).parts
    )


def _is_run_config(path: Path) -> bool:
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and all(
        isinstance(config.get(k), dict) for k in ("target", "method")
    )


def read_result(path: Path) -> dict | None:
    """A result.json as a dict with the contract's fields typed, or None if it is not one
    (truncated, empty, random bytes, a list, null, wrongly typed fields)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("status") not in STATUSES:
        return None
    if any(row.get(k) is not None and not isinstance(row.get(k), str) for k in NAMES):
        return None
    seed = row.get("seed")
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool)):
        return None
    for key, value in row.items():  # a metric must be a number (or null) to be averaged
        if key not in NAMES and isinstance(value, bool | list | dict):
            row[key] = None
    return row


def collect_runs(sweep_dir: Path) -> pd.DataFrame:
    """One row per run folder. Folders with no result.json yet have status 'running'; one
    whose result.json cannot be read is 'unreadable' (named from its folder and config)."""
    rows = []
    for run_dir in find_run_dirs(sweep_dir):
        path = run_dir / RESULT
        config = _flat_config(run_dir)
        named = {
            "target": config.get("target.name"),
            "model": config.get("model.name"),
            "method": config.get("method.name"),
            "seed": _int_or_none(config.get("seed")),
        }
        if path.exists():
            row = read_result(path) or {**named, "status": "unreadable"}
        else:  # started, not finished: name it from its config
            row = {**named, "status": "running"}
        row["run_dir"] = str(run_dir)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for key in ("target", "method", "model", "seed"):
        if key not in frame:
            frame[key] = None
    frame["variant"] = variants([run_dir for run_dir in frame["run_dir"]], frame)
    return frame.sort_values(
        ["target", "method", "variant", "seed"], na_position="last"
    ).reset_index(drop=True)


_NOT_A_VARIANT = ("seed", "data.seed", "device")


def variants(run_dirs: list[str], frame: pd.DataFrame) -> list[str]:
    """Config settings that differ between runs of one (target, method) cell other than the seed,
    e.g. "trainer.lr=0.01": a sweep over them must not be averaged into one cell.

    When every run has Hydra's record of its command-line overrides, only overridden settings
    count, so that runs of one preset made by different versions of a config (a new key with
    a default, say) still pool; without that record every differing setting counts."""
    configs = [_flat_config(Path(d)) for d in run_dirs]
    keys = sorted({k for c in configs for k in c if k not in _NOT_A_VARIANT})
    overridden = [_overridden_keys(Path(d)) for d in run_dirs]
    if all(o is not None for o in overridden):
        swept = set().union(*overridden)
        keys = [k for k in keys if k in swept]
    varying = []
    for key in keys:
        values: dict[tuple, set] = {}
        for config, target, method in zip(configs, frame["target"], frame["method"], strict=True):
            values.setdefault((target, method), set()).add(config.get(key))
        if any(len(v) > 1 for v in values.values()):
            varying.append(key)
    return [",".join(f"{k}={c.get(k)}" for k in varying) for c in configs]


def _overridden_keys(run_dir: Path) -> set[str] | None:
    """Keys set on the command line for this run (Hydra's .hydra/overrides.yaml), or None."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return None
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides if "=" in str(o)}


def _flat_config(run_dir: Path) -> dict[str, str]:
    path = run_dir / CONFIG
    try:
        config = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    flat: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = str(node)

    walk(config or {}, "")
    return flat


def read_curves(runs: pd.DataFrame, filename: str = "metrics.csv") -> pd.DataFrame:
    """Concatenate each run's per-evaluation metrics, tagged with target/method/seed."""
    frames = []
    for run in runs.itertuples():
        path = Path(run.run_dir) / filename
        if not path.exists():
            continue
        try:
            curve = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
            continue
        if "step" not in curve or curve.empty:
            continue
        curve["step"] = pd.to_numeric(curve["step"], errors="coerce")
        curve = curve.dropna(subset=["step"])
        curve["target"], curve["method"], curve["seed"] = run.target, run.method, run.seed
        curve["run_dir"] = run.run_dir
        frames.append(curve)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
