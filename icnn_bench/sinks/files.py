"""The run folder's metric files; always on. Each write replaces the file atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from icnn_bench import io
from icnn_bench.run_folder import METRICS, RESULT, TRAIN_LOSS
from icnn_bench.sinks.base import Sink


class FileSink(Sink):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._rows: list[dict[str, float]] = []
        self._steps: list[int] = []
        self._losses: list[float] = []

    def log_train_losses(self, steps: list[int], losses: list[float]) -> None:
        self._steps += steps
        self._losses += losses
        frame = pd.DataFrame({"step": self._steps, "train_loss": self._losses})
        io.write_csv(self.run_dir / TRAIN_LOSS, frame)

    def log_eval(self, row: dict[str, float]) -> None:
        self._rows.append(dict(row))
        io.write_csv(self.run_dir / METRICS, pd.DataFrame(self._rows))

    def finish(self, result: dict[str, Any]) -> None:
        io.write_json(self.run_dir / RESULT, result)
