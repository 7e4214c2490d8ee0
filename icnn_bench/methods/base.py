"""The weight-source seam: where the ICNN's tensors come from.

A weight source is an nn.Module that, called with the current training batch (or None),
returns every ICNN tensor by name, the constrained ones elementwise non-negative. Three hooks
complete the contract:

- ``project_()``   runs after each optimizer step (PGD clamps there; others do nothing);
- ``pin(data)``    freezes one emission for evaluation, ``unpin()`` releases it;
- ``dead_fraction()`` / ``constrained_parameters()`` feed the diagnostics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from icnn_bench.models.icnn import ICNNSpec

# A reparametrised entry whose derivative sigmoid(u) is below this is "on the shoulder".
SHOULDER = 0.05


class WeightSource(nn.Module, ABC):
    name: str = "base"

    def __init__(self, spec: ICNNSpec) -> None:
        super().__init__()
        self.spec = spec
        self._pinned: dict[str, Tensor] | None = None

    def forward(self, batch: Tensor | None = None) -> dict[str, Tensor]:
        if self._pinned is not None:
            return self._pinned
        return self.emit(batch)

    @abstractmethod
    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        """All ICNN tensors by name; `batch` is the conditioning data (only the lift reads it)."""

    @abstractmethod
    def pre_positivity(self) -> dict[str, Tensor]:
        """Per constrained tensor, the value whose sign or shoulder decides if an entry is dead."""

    @abstractmethod
    def constrained_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters that produce the constrained tensors."""

    def project_(self) -> None:
        """Called after every optimizer step."""

    def use_training_split(self, train: Tensor) -> None:
        """Told the training split once before training (only the lift's ablations read it)."""

    def dead_fraction(self) -> float:
        """Share of constrained entries with no gradient path (reparametrised: on the shoulder)."""
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return float((torch.sigmoid(values) < SHOULDER).float().mean())

    @torch.no_grad()
    def pin(self, train_data: Tensor) -> None:
        """Freeze the emission used for evaluation (the lift pools over `train_data`)."""
        self._pinned = None
        self._pinned = {k: v.detach().clone() for k, v in self.emit_pinned(train_data).items()}

    def emit_pinned(self, train_data: Tensor) -> dict[str, Tensor]:
        return self.emit(None)

    def unpin(self) -> None:
        self._pinned = None

    def set_pinned(self, params: dict[str, Tensor]) -> None:
        """Restore a saved evaluation emission (used when loading a finished run)."""
        self._pinned = {k: v.detach().clone() for k, v in params.items()}

    @property
    def pinned(self) -> dict[str, Tensor] | None:
        return self._pinned
