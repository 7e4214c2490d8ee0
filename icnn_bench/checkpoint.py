"""Checkpoints: all a run needs to continue bit for bit where it stopped.

A checkpoint holds the model (parameters, buffers, the random streams and side state its
modules own), the optimizer and schedule, the loop's own streams and the metrics so far, next
to the config it belongs to. It is written atomically and the previous one is kept until the
new one is whole, so a kill at any moment leaves a readable checkpoint. One that cannot be
read anyway (a damaged disk, a foreign file) is moved aside, not deleted, and the run goes
on from the previous checkpoint or from the start, saying which.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icnn_bench import io
from icnn_bench.errors import ConfigError
from icnn_bench.run_folder import PREVIOUS_CHECKPOINT, first_difference


@dataclass
class Checkpoints:
    """Where and how often a run saves itself, and the checkpoint it resumes from (if any)."""

    path: Path
    every: int | None
    config: dict[str, Any]
    resume_from: dict[str, Any] | None = None
    saved_step: int | None = None
    note: str | None = None  # a damaged checkpoint or a change of device, for the console
    device: str = "cpu"  # where this attempt trains: recorded in each checkpoint

    @property
    def previous(self) -> Path:
        return self.path.with_name(PREVIOUS_CHECKPOINT)

    def due(self, step: int, last_step: int) -> bool:
        """Every `every` steps, and after the last (evaluation can be long)."""
        return self.every is not None and (step % self.every == 0 or step == last_step)

    def save(self, state: dict[str, Any]) -> None:
        """Write the new checkpoint whole, then retire the old one to checkpoint.prev.pt."""
        fresh = self.path.with_name(f".{self.path.name}.new")
        io.save_torch(fresh, {"config": self.config, "device": self.device, **state})
        if self.path.exists():
            os.replace(self.path, self.previous)
        os.replace(fresh, self.path)
        self.saved_step = state["step"]

    def discard(self) -> None:
        for path in (self.path, self.previous, self.path.with_name(f".{self.path.name}.new")):
            path.unlink(missing_ok=True)


def open_checkpoints(
    path: Path, config: dict[str, Any], every: int | None, resume: str, device: str = "cpu"
) -> Checkpoints:
    """Checkpoints at `path` (a run folder's, or a stacked cell's job folder's); with
    resume=auto, loads the one left by an earlier attempt of this same config (another
    config's is an error, not a silent restart). One written on another device resumes on
    this one: tensors are moved, and the random streams are the CPU's on every device."""
    checkpoints = Checkpoints(Path(path), every, config, device=str(device))
    if resume == "never":
        checkpoints.discard()
        return checkpoints
    damaged = []
    for candidate in (checkpoints.path, checkpoints.previous):
        if not candidate.exists():
            continue
        state = _load(candidate)
        if state is None:
            damaged.append(_move_aside(candidate))
            continue
        difference = first_difference(state.get("config", {}), config)
        if difference is not None:
            raise ConfigError(
                f"{path.parent} holds a checkpoint of another config ({difference}); use a new "
                "run folder, or trainer.resume=never to start over"
            )
        checkpoints.resume_from = state
        checkpoints.saved_step = state["step"]
        written_on = state.get("device", "cpu")
        if written_on != checkpoints.device:
            checkpoints.note = (
                f"resuming step {state['step']} of a checkpoint written on {written_on} on "
                f"{checkpoints.device}: the same batches and draws follow; numbers match an "
                "uninterrupted run up to the devices' kernel order"
            )
        break
    if damaged:
        where = (
            f"resuming from the previous checkpoint (step {checkpoints.saved_step})"
            if checkpoints.resume_from is not None
            else "starting the run over"
        )
        kept = ", ".join(str(p) for p in damaged)
        checkpoints.note = f"unreadable checkpoint kept aside as {kept}; {where}"
    return checkpoints


def _load(path: Path) -> dict[str, Any] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # truncated, empty, random bytes, another program's file
        return None
    if not isinstance(state, dict) or "step" not in state or "config" not in state:
        return None
    return state


def _move_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    return aside


def global_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what a checkpoint saved; CUDA streams only where this machine has those
    devices (a checkpoint may come from another machine)."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
