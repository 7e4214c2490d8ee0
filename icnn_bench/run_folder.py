"""A run folder: its files, how each is written and read, who owns it, when it is finished.

Every file of a run folder is named here and nowhere else. Writes are atomic (io), so a
reader never sees half a file. A folder is owned by one process at a time: an OS file lock
(filelock) that goes with the process that took it, so a lock left by a process that died is
free again; beside it, the holder's process id, host, start time and command, for the one
line a refused command prints. A run is finished when its result.json says `ok` and its
config is the one asked for; another config's finished run is refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from filelock import FileLock, Timeout

from icnn_bench import io
from icnn_bench.errors import ConfigError

# ---------------------------------------------------------------- the files

CONFIG = "config.yaml"  # the resolved config the run was made with
RESULT = "result.json"  # the contract: status, metrics, timings
METRICS = "metrics.csv"  # one row per evaluation
TRAIN_LOSS = "train_loss.csv"  # one row per step
WEIGHTS = "weights.pt"  # the final state dict and the pinned emission
DWELL = "dwell.csv"  # softplus-type methods: survival of shoulder spells
DENSITY = "density.csv"  # 1-D: x, model[, target]; 2-D: x, y, model[, target, data]
SAMPLES = "samples.png"  # decoded samples next to real data (targets that can decode)
SAMPLES_CSV = "samples.csv"  # flows in 1-D/2-D: draws by inverting the flow
TRANSPORT_MAP = "transport_map.csv"  # OT in 2-D: x, y, the learned and the true map's images
FIGURE = "run.png"  # a single run's own picture
ERROR_LOG = "error.txt"  # the traceback of an unexpected error
CHECKPOINT = "checkpoint.pt"  # what a run resumes from (a stacked cell's: in its job folder)
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
WANDB_ID = "wandb_id.txt"  # the W&B run of the folder, resumed with it
RECORDS = ".hydra"  # how the run was made: Hydra's config, its own and the overrides
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
LOCK = ".lock"  # a run folder's
REPORT_LOCK = ".report.lock"  # a report folder's: a report may be made during a sweep

# settings that may change between a run and its resumption without changing its results
_NOT_IDENTITY = (
    "trainer.resume",
    "trainer.checkpoint_every",
    "logger",
    "device",
    "deterministic",
    "report",
    "regime.folder_suffix",
)


STATUSES = ("ok", "diverged", "failed", "interrupted")
NAMES = ("target", "model", "method")  # strings in a readable result.json


def write_config(folder: Path, config: dict[str, Any]) -> None:
    io.write_text(Path(folder) / CONFIG, yaml.safe_dump(config, sort_keys=False))


def write_records(folder: Path, records: dict[str, str]) -> None:
    """The files of RECORDS ({file name: text})."""
    for name, text in records.items():
        io.write_text(Path(folder) / RECORDS / name, text)


def read_config(folder: Path) -> dict[str, Any] | None:
    """The run's config.yaml as a dict, or None where it is missing or not one."""
    try:
        config = yaml.safe_load((Path(folder) / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def is_run_config(config: dict[str, Any] | None) -> bool:
    """A run's config names a target and a method (a user's model group may be absent)."""
    return isinstance(config, dict) and all(
        isinstance(config.get(k), dict) for k in ("target", "method")
    )


def flat_config(folder: Path) -> dict[str, Any]:
    """config.yaml as {dotted key: value}, typed as YAML reads them (a list is one value)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(read_config(folder) or {}, "")
    return flat


def overridden_keys(folder: Path) -> set[str] | None:
    """Keys set on the command line for this run (its records' overrides.yaml), or None."""
    try:
        overrides = yaml.safe_load((Path(folder) / RECORDS / "overrides.yaml").read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list):
        return None
    return {str(o).split("=", 1)[0].lstrip("+~") for o in overrides if "=" in str(o)}


def read_result(path: Path) -> dict | None:
    """A result.json (the file, or the folder holding it) as a dict with the contract's
    fields typed, or None if it is not one (truncated, empty, random bytes, a list, null,
    wrongly typed fields)."""
    path = Path(path)
    path = path / RESULT if path.is_dir() else path
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


def read_table(folder: Path, name: str) -> pd.DataFrame | None:
    """One of the run's csv files (METRICS, DENSITY, DWELL ...), or None where it is missing
    or damaged."""
    try:
        return pd.read_csv(Path(folder) / name)
    except (OSError, UnicodeDecodeError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def finished_result(folder: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The folder's result when it is this config's finished (ok) run, else None; another
    config's finished run raises ConfigError (refused rather than overwritten)."""
    result, saved = read_result(folder), read_config(folder)
    if result is None or saved is None or result.get("status") != "ok":
        return None
    difference = first_difference(saved, config)
    if difference is not None:
        raise ConfigError(
            f"{folder} holds a finished run of another config ({difference}); use a new run "
            "folder, or trainer.resume=never to overwrite it"
        )
    return result


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """`key: A there, B here` for the first setting that differs, else None."""
    old, new = _flat(saved), _flat(current)
    for key in sorted(old.keys() | new.keys()):
        if re.sub(r"^seeds\.\d+\.", "", key).startswith(_NOT_IDENTITY):
            continue
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} here"
    return None


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):  # a stacked cell: one config per seed
                out.update(_flat(item, f"{prefix}{key}.{i}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def modified(folder: Path) -> float:
    """When the run last wrote its result (or, still running, its config)."""
    for name in (RESULT, CONFIG):
        with contextlib.suppress(OSError):
            return (Path(folder) / name).stat().st_mtime
    return 0.0


# ---------------------------------------------------------------- one process a folder


class FolderInUse(ConfigError):
    """Another process holds the folder's lock."""


@contextlib.contextmanager
def owned(folder: Path, what: str = "run folder", name: str = LOCK) -> Iterator[None]:
    """Hold `folder`'s lock (`name`) for the block; FolderInUse (one line, naming the
    holder) if another process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / name))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderInUse(f"{what} {folder} is in use by {holder(folder / name)}; wait for it "
                          "to finish, or use another folder") from None  # fmt: skip
    try:
        io.write_json(_holder_file(folder / name), _me())
        yield
    finally:
        with contextlib.suppress(OSError):
            _holder_file(folder / name).unlink()
        lock.release()


def _holder_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder")


def holder(lock: Path) -> str:
    """`process 1234 on host, since 14:02:11 (icnn-bench ...)`, as far as it is known."""
    try:
        info = json.loads(_holder_file(Path(lock)).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"process {info['pid']} on {info['host']}, since {since} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _me() -> dict:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else ""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": command,
    }


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "DENSITY",
    "DWELL",
    "ERROR_LOG",
    "FIGURE",
    "METRICS",
    "RESULT",
    "SAMPLES",
    "SAMPLES_CSV",
    "TRAIN_LOSS",
    "WEIGHTS",
    "FolderInUse",
    "finished_result",
    "flat_config",
    "owned",
    "read_config",
    "read_result",
    "read_table",
    "write_config",
]
