"""Progress on the terminal: a bar during long runs, one line per finished run."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from icnn_bench.errors import ConfigError
from icnn_bench.sinks.base import Sink

SWEEP_JOBS, SWEEP_DIR, SWEEP_START = (
    "ICNN_BENCH_SWEEP_JOBS",
    "ICNN_BENCH_SWEEP_DIR",
    "ICNN_BENCH_SWEEP_START",
)


def sweep_progress(runs_per_job: int = 1) -> str | None:
    """'k of N runs, ETA 12 min' for the sweep this process's job belongs to (the CLI sets
    its job count, folder and start in the environment; runs are counted by their
    result.json, a job of several seeds holding one per seed). The ETA extrapolates from the
    runs finished since this sweep started, so a resumed sweep's earlier runs do not skew it."""
    total, folder, start = (os.environ.get(k) for k in (SWEEP_JOBS, SWEEP_DIR, SWEEP_START))
    if not (total and folder and start) or not total.isdigit():
        return None
    started = float(start)
    finished = [p.stat().st_mtime for p in Path(folder).glob("**/result.json")]
    done, done_now = len(finished), sum(1 for t in finished if t >= started)
    total_n = int(total) * max(1, runs_per_job)
    text = f"{done} of {total_n} runs"
    if done_now > 0 and done < total_n:
        left = (time.time() - started) / done_now * (total_n - done)
        text += f", ETA {left / 60:.0f} min" if left >= 90 else f", ETA {left:.0f} s"
    return text


class ConsoleSink(Sink):
    def __init__(
        self,
        progress: bool | str = "auto",
        swept: dict[str, Any] | None = None,
        runs_per_job: int = 1,
    ) -> None:
        if progress not in (True, False, "auto"):
            raise ConfigError(f"logger.progress={progress!r}; choose one of: auto, true, false")
        self.progress = sys.stderr.isatty() if progress == "auto" else progress
        named = ("target", "method", "seed")  # already in the line's label
        self.swept = {k: v for k, v in (swept or {}).items() if k not in named}
        self.runs_per_job = runs_per_job
        self._bar: tqdm | None = None
        self._step = 0
        self._label = ""

    def start(self, info: dict[str, Any], total_steps: int) -> None:
        self._label = f"{info['target']}/{info['method']}/seed{info['seed']}"
        self._step = 0
        if info.get("resumed_from_step") is not None:
            print(f"{self._label}: resuming from step {info['resumed_from_step']}", flush=True)
        if self.progress:
            self._bar = tqdm(total=total_steps, desc=self._label, leave=False, unit="step")

    def log_eval(self, row: dict[str, float]) -> None:
        if self._bar is not None:
            step = int(row["step"])
            self._bar.update(step - self._step)
            self._step = step
            self._bar.set_postfix(
                train_loss=f"{row.get('train_loss', float('nan')):.4f}",
                val_nll=f"{row['val_nll']:.4f}",
            )

    def finish(self, result: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        progress = sweep_progress(self.runs_per_job)
        line = summary_line(result, self.swept)
        print(f"{line}  [{progress}]" if progress else line, flush=True)
        if result.get("sampler_note"):  # the training log Z was off: say it where it is seen
            print(f"  warning: {result['sampler_note']}", flush=True)

    def already_finished(self, result: dict[str, Any]) -> None:
        print(f"{summary_line(result, self.swept)}  [finished earlier; kept]", flush=True)


def summary_line(result: dict[str, Any], swept: dict[str, Any] | None = None) -> str:
    label = f"{result.get('target')}/{result.get('method')}/seed{result.get('seed')}"
    if swept:
        label += " " + " ".join(f"{k}={v}" for k, v in swept.items())
    status = result.get("status")
    if status == "ok":
        parts = [f"test NLL {_fmt(result.get('test_nll'))}"]
        if result.get("kl") is not None:
            parts.append(f"KL {_fmt(result.get('kl'))}")
        if result.get("tv") is not None:
            parts.append(f"TV {_fmt(result.get('tv'))}")
        speed = f"{result.get('wall_s', 0):.1f} s, {result.get('steps_per_s', 0):.0f} steps/s"
        return f"{label:<28} ok       {'  '.join(parts)}  ({speed})"
    where = f" at step {result['diverged_step']}" if result.get("diverged_step") else ""
    return f"{label:<28} {status}{where}: {result.get('error')}"


def _fmt(value: Any) -> str:
    return "nan" if value is None else f"{value:.4f}"
