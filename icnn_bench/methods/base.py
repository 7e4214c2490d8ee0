"""The seam of the comparison: a constraint method decides where the ICNN's tensors come from.

A method is an nn.Module; `emit(batch)` returns every ICNN tensor by name (conf's `_target_`
names the class), the constrained ones elementwise non-negative. It implements three things:

- ``emit(batch)``              all tensors; `batch` is the training batch (or None);
- ``pre_positivity()``         per constrained tensor, the value whose sign or shoulder decides
                               whether an entry is dead (at the last emission);
- ``constrained_parameters()`` the trainable parameters behind the constrained tensors.

Everything else has a default that a new method overrides only if it has it: a projection
after each step (pgd), which entries are dead (default: on the softplus shoulder, sigmoid(u)
< SHOULDER), a penalty added to the training loss and an evaluation emission of its own
(penalty: the projection), extra metrics per evaluation, batch conditioning, a slack for the
cross-covariance probe. A method that draws its own initial values (the field's recipes)
takes a `generator` argument: the builder passes its seeded stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from icnn_bench.models.icnn import ICNNSpec
from icnn_bench.side_state import SideState

# A reparametrised entry whose derivative sigmoid(u) is below this is "on the shoulder".
SHOULDER = 0.05


class ConstraintMethod(nn.Module, SideState, ABC):
    #: dead entries sit on a softplus shoulder (False: a hard bound, as pgd's clamp at 0)
    has_shoulder: bool = True
    #: the emission reads the training batch, so the loss's weights change with it
    conditions_on_batch: bool = False
    #: can be stacked into one vmapped model at all (False: it draws its own randomness)
    stackable: bool = True
    #: seeds stacked into one vmapped model train faster than one after another on a CPU
    #: (results/bench.md: not for the lift, whose readout is memory-bound)
    batches_well_on_cpu: bool = True
    #: the training emission is non-negative too (False: only the evaluation emission is,
    #: e.g. a soft penalty that projects before evaluating)
    nonnegative_in_training: bool = True

    def __init__(self, spec: ICNNSpec) -> None:
        super().__init__()
        self.spec = spec
        self._pinned: dict[str, Tensor] | None = None

    @classmethod
    def training_bytes_per_entry(cls, options: dict) -> float:
        """An upper bound of the bytes training holds per ICNN entry (the memory check):
        a float32 parameter, its gradient, two Adam moments, an emission, a checkpoint copy."""
        return 4.0 * 6

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
        """Called after every optimizer step (pgd clamps here)."""

    def use_training_split(self, train: Tensor) -> None:
        """Told the training split once before training (an ablation may pool it)."""

    def dead_mask(self) -> Tensor:
        """Per constrained entry (flattened, in `pre_positivity` order): no gradient path, or
        a vanishing one (default: on the softplus shoulder, sigmoid(u) < SHOULDER)."""
        values = torch.cat([u.detach().reshape(-1) for u in self.pre_positivity().values()])
        return torch.sigmoid(values) < SHOULDER

    def dead_fraction(self) -> float:
        """Share of constrained entries that are dead (`dead_mask`)."""
        return float(self.dead_mask().float().mean())

    def penalty(self) -> Tensor | None:
        """A term added to the training loss (None: none)."""
        return None

    def diagnostics(self) -> dict[str, float]:
        """Extra metrics.csv columns at each evaluation, of the weights trained so far."""
        return {}

    def probe_slack(self) -> tuple[Tensor, Tensor] | None:
        """For the cross-covariance probe: the trainable slack b added to the emitted iterate
        and the mask of its constrained entries (in `pre_positivity` order); None: no slack."""
        return None

    # -- the evaluation emission ---------------------------------------------------------

    @torch.no_grad()
    def pin(self, pool: Tensor) -> None:
        """Freeze the emission used for evaluation; a batch-conditioned method pools `pool`."""
        self._pinned = None
        self._pinned = {k: v.detach().clone() for k, v in self.emit_pinned(pool).items()}

    def emit_pinned(self, pool: Tensor) -> dict[str, Tensor]:
        return self.emit(pool)

    def unpin(self) -> None:
        self._pinned = None

    def set_pinned(self, params: dict[str, Tensor]) -> None:
        """Restore a saved evaluation emission (used when loading a finished run)."""
        self._pinned = {k: v.detach().clone() for k, v in params.items()}

    @property
    def pinned(self) -> dict[str, Tensor] | None:
        return self._pinned

    def _apply(self, fn, recurse: bool = True):
        """.to(device) / .double() move the pinned emission with the parameters."""
        module = super()._apply(fn, recurse)
        if self._pinned is not None:
            self._pinned = {k: fn(v) for k, v in self._pinned.items()}
        return module
