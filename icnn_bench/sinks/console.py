"""Progress on the terminal: a bar during long runs, one line per finished run."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from icnn_bench.errors import ConfigError
from icnn_bench.evaluation import validation_metric
from icnn_bench.sinks.base import Sink
from icnn_bench.sweep_state import SweepState


class ConsoleSink(Sink):
    def __init__(
        self,
        progress: bool | str = "auto",
        swept: dict[str, Any] | None = None,
        runs_per_job: int = 1,
        sweep: SweepState | None = None,
        sweep_dir: Path | None = None,
    ) -> None:
        """`progress`: a bar per run (auto: on a terminal); `swept`: the run's values of what
        its sweep varies (in its line); `sweep`, `sweep_dir`: the sweep it belongs to, for the
        "k of N runs, ETA" part of each line; `runs_per_job`: seeds a job holds."""
        if progress not in (True, False, "auto"):
            raise ConfigError(f"logger.progress={progress!r}; choose one of: auto, true, false")
        self.progress = sys.stderr.isatty() if progress == "auto" else progress
        named = ("target", "method", "seed")  # already in the line's label
        self.swept = {k: v for k, v in (swept or {}).items() if k not in named}
        self.runs_per_job = runs_per_job
        self.sweep, self.sweep_dir = sweep, sweep_dir
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
            shown = {"train_loss": row.get("train_loss", math.nan)}
            shown.update(validation_metric(row) or {})
            self._bar.set_postfix({key: f"{value:.4f}" for key, value in shown.items()})

    def finish(self, result: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        progress = self.sweep.progress(self.sweep_dir, self.runs_per_job) if self.sweep else None
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
    if status == "ok" and result.get("l2_uvp") is not None:  # an OT map
        parts = [f"L2-UVP {_fmt(result['l2_uvp'])}%", f"1-cos {_fmt(result.get('cos_gap'))}"]
        speed = f"{result.get('wall_s', 0):.1f} s, {result.get('steps_per_s', 0):.0f} steps/s"
        return f"{label:<28} ok       {'  '.join(parts)}  ({speed})"
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
