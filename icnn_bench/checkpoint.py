"""Checkpoints: all a run needs to continue bit for bit where it stopped.

A checkpoint holds the model (parameters, buffers, the random streams its modules own), the
optimizer and schedule, the loop's own streams and the metrics so far, next to the config it
belongs to. It is written atomically, so a kill at any moment leaves the previous one whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icnn_bench import io
from icnn_bench.errors import ConfigError, DataError

CHECKPOINT = "checkpoint.pt"
# settings that may change between a run and its resumption without changing its results
_NOT_IDENTITY = ("trainer.resume", "trainer.checkpoint_every", "logger", "device")


@dataclass
class Checkpoints:
    """Where and how often a run saves itself, and the checkpoint it resumes from (if any)."""

    path: Path
    every: int | None
    config: dict[str, Any]
    resume_from: dict[str, Any] | None = None
    saved_step: int | None = None

    def due(self, step: int, last_step: int) -> bool:
        """Every `every` steps, and after the last (evaluation can be long)."""
        return self.every is not None and (step % self.every == 0 or step == last_step)

    def save(self, state: dict[str, Any]) -> None:
        io.save_torch(self.path, {"config": self.config, **state})
        self.saved_step = state["step"]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def open_checkpoints(run_dir: Path, config: dict[str, Any], every: int | None, resume: str):
    """The run folder's checkpoints; with resume=auto, loads the one left by an earlier
    attempt of this same config (another config there is an error, not a silent restart)."""
    checkpoints = Checkpoints(Path(run_dir) / CHECKPOINT, every, config)
    if resume == "never" or not checkpoints.path.exists():
        checkpoints.discard()
        return checkpoints
    try:
        state = torch.load(checkpoints.path, map_location="cpu", weights_only=False)
    except Exception as error:  # a checkpoint is written atomically; this is a foreign file
        raise DataError(
            f"{checkpoints.path}: unreadable checkpoint ({type(error).__name__}); "
            "trainer.resume=never starts the run over"
        ) from None
    difference = first_difference(state.get("config", {}), config)
    if difference is not None:
        raise ConfigError(
            f"{run_dir} holds a checkpoint of another config ({difference}); use a new run "
            "folder, or trainer.resume=never to start over"
        )
    checkpoints.resume_from = state
    checkpoints.saved_step = state["step"]
    return checkpoints


def first_difference(saved: dict[str, Any], current: dict[str, Any]) -> str | None:
    """`key: A there, B here` for the first setting that differs, else None."""
    old, new = _flat(saved), _flat(current)
    for key in sorted(old.keys() | new.keys()):
        if key.startswith(_NOT_IDENTITY):
            continue
        if old.get(key) != new.get(key):
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} here"
    return None


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def global_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
