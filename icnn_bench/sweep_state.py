"""What a sweep's command tells its jobs: one object, carried to job processes (joblib workers,
submitit jobs) in one environment variable, and the sweep's "k of N runs, ETA" line."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ENV_VAR = "ICNN_BENCH_SWEEP"

__all__ = ["ENV_VAR", "SweepState", "this_process"]


@dataclass(frozen=True)
class SweepState:
    """`launcher`: "host:pid" of the command that started the jobs (local jobs stop with it);
    `jobs`: the sweep's job count (0 when unknown, e.g. optuna intervals); `start`: when this
    invocation of the sweep started (epoch seconds); `axes`: the settings the sweep varies."""

    launcher: str = ""
    jobs: int = 0
    start: float = 0.0
    axes: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_environ(cls) -> SweepState:
        """The state the launching command left for this process (empty outside a sweep)."""
        text = os.environ.get(ENV_VAR)
        if not text:
            return cls()
        try:
            values = json.loads(text)
            return cls(
                launcher=str(values.get("launcher", "")),
                jobs=int(values.get("jobs", 0)),
                start=float(values.get("start", 0.0)),
                axes=tuple(str(a) for a in values.get("axes", ())),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # a damaged variable costs the progress line, never the run

    def to_environ(self) -> None:
        """Hand this state to every process started from here on (Hydra's launchers)."""
        os.environ[ENV_VAR] = json.dumps({**asdict(self), "axes": list(self.axes)})

    def launched_sweep(self, jobs: int, axes: list[str]) -> SweepState:
        """This state once the command has planned a sweep of `jobs` jobs varying `axes`."""
        return replace(self, jobs=jobs, start=time.time(), axes=tuple(axes))

    def launcher_pid(self) -> int | None:
        """The launching command's pid where it runs on this machine, else None."""
        host, _, pid = self.launcher.rpartition(":")
        if not pid.isdigit() or host != socket.gethostname():
            return None
        return int(pid)

    def progress(self, sweep_dir: Path | None, runs_per_job: int = 1) -> str | None:
        """'k of N runs, ETA 12 min': runs are counted by their result.json (a job of several
        seeds holds one per seed); the ETA extrapolates from the runs finished since this
        invocation started, so a resumed sweep's earlier runs do not skew it."""
        if sweep_dir is None or self.jobs <= 0 or self.start <= 0:
            return None
        finished = [p.stat().st_mtime for p in Path(sweep_dir).glob("**/result.json")]
        done, done_now = len(finished), sum(1 for t in finished if t >= self.start)
        total = self.jobs * max(1, runs_per_job)
        text = f"{done} of {total} runs"
        if done_now > 0 and done < total:
            left = (time.time() - self.start) / done_now * (total - done)
            text += f", ETA {left / 60:.0f} min" if left >= 90 else f", ETA {left:.0f} s"
        return text


def this_process() -> SweepState:
    """The state from the environment, naming this process the launcher where none is named
    yet (a command started by hand; a job's own state keeps its launcher)."""
    state = SweepState.from_environ()
    if not state.launcher:
        state = replace(state, launcher=f"{socket.gethostname()}:{os.getpid()}")
    return state
