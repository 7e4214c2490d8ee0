"""A run folder is owned by one process at a time: the lock, and who holds it.

The lock is an OS file lock (filelock), so it goes with the process that took it: a lock left
by a process that died is free again, and the next run takes it over. Beside it, the holder's
process id, host, start time and command say who holds it, for the one line a refused run
prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from icnn_bench import io
from icnn_bench.errors import ConfigError

LOCK = ".lock"  # a run folder's
REPORT_LOCK = ".report.lock"  # a report folder's: a report may be made during a sweep


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
