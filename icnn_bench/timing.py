"""Timing the training loop as users run it: a stepper wrapper recording each step's two halves
and what the loop does between steps (evaluations), and what a benchmark file says of the
machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from icnn_bench.loop import Stepper

__all__ = ["TimedStepper", "cpu_name", "load_average", "machine_description", "quartiles"]


class TimedStepper(Stepper):
    """Wraps the stepper `train_loop` drives. Per step: `backward_s` (loss, backward, clip),
    `step_s` (from backward's start to the update's end: the whole optimizer side, the loop's
    finite check included); per evaluation: `eval_s` (from the end of a step that evaluates to
    the next step's start, or to the loop's end). On a GPU each mark waits for the device."""

    def __init__(self, inner: Stepper) -> None:
        self.inner = inner
        self.optimizer, self.schedule = inner.optimizer, inner.schedule
        self.backward_s: list[float] = []
        self.step_s: list[float] = []
        self.eval_s: list[float] = []
        self._step_start = 0.0
        self._step_end: float | None = None
        self._evaluating = False
        self._device_of = torch.zeros(())  # a tensor on the device the steps run on

    def backward(self, batches: list[Tensor], record: bool) -> tuple[Tensor, Tensor, list[float]]:
        self._close_gap()
        self._step_start, self._evaluating = self._now(batches[0]), record
        out = self.inner.backward(batches, record)
        self._device_of = batches[0]
        self.backward_s.append(self._now(batches[0]) - self._step_start)
        return out

    def update(self, keep: list[bool]) -> None:
        self.inner.update(keep)
        self._step_end = self._now(self._device_of)
        self.step_s.append(self._step_end - self._step_start)

    def schedule_step(self) -> None:
        self.inner.schedule_step()

    def expose_gradients(self) -> None:
        self.inner.expose_gradients()

    def close(self) -> None:
        self._close_gap()
        self._step_end = None  # the next loop's first step follows its warm-up, not an eval
        self.inner.close()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def clear(self) -> None:
        """Forget what was timed so far (e.g. after warming up)."""
        for timings in (self.backward_s, self.step_s, self.eval_s):
            timings.clear()

    def _close_gap(self) -> None:
        if self._step_end is not None and self._evaluating:
            self.eval_s.append(self._now(self._device_of) - self._step_end)
        self._step_end = None

    @staticmethod
    def _now(like: Tensor) -> float:
        if like.device.type == "cuda":
            torch.cuda.synchronize(like.device)
        return time.perf_counter()


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile."""
    tensor = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(tensor, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(q[0]), float(q[1]), float(q[2])


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what platform knows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """CPU, core count, Python, torch and its thread counts, in one line."""
    return (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), "
        f"{torch.get_num_interop_threads()} inter-op thread(s)"
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (a noisy machine's numbers say so)."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"
