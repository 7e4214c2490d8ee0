"""Atomic file writes: a reader never sees half a file, a killed writer leaves the old one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# a temporary file is created 0600; the file it becomes follows the umask like any other's
FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    _atomic(path, write)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(finite_or_none(payload), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, frame: Any) -> None:
    """Write a pandas DataFrame."""
    _atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_csv_gz(path: Path, frame: Any) -> None:
    """A DataFrame as gzipped CSV, numbers to 7 significant digits (compact, reproducible:
    no timestamp in the gzip header)."""
    import gzip

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(frame.to_csv(index=False, float_format="%.7g").encode())

    _atomic(path, write)


def save_torch(path: Path, obj: Any) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def save_figure(path: Path, fig: Any) -> None:
    suffix = Path(path).suffix
    _atomic(
        path, lambda tmp: fig.savefig(tmp, format=suffix.lstrip("."), dpi=130, bbox_inches="tight")
    )


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: map them to null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
