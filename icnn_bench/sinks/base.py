"""Where metrics go. The train loop calls every sink; a sink never changes training."""

from __future__ import annotations

from typing import Any


class Sink:
    """Receives a run's metrics as they are produced. Override what you need."""

    def start(self, info: dict[str, Any], total_steps: int) -> None:
        """Called once before the first step; `info` names the run."""

    def log_train_losses(self, steps: list[int], losses: list[float]) -> None:
        """Per-step training losses since the previous call."""

    def log_eval(self, row: dict[str, float]) -> None:
        """One evaluation: step, train_loss, val_nll, dead_frac, grad_norm, ..."""

    def finish(self, result: dict[str, Any]) -> None:
        """Called once with the final result (also when the run diverged or failed)."""

    def already_finished(self, result: dict[str, Any]) -> None:
        """Called instead of everything else when the run folder already holds this run's
        finished result (which is kept as it is)."""
