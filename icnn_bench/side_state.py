"""State a module moves while it computes a loss that is neither a parameter nor a buffer:
a learned proposal's optimizer, a method's record of its last emission. Checkpoints save it;
diagnostics that evaluate extra losses hold it still (`frozen`) and put it back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class SideState:
    """Mixin for nn.Modules with side state. The defaults say: none."""

    def side_state(self) -> Any:
        """A picklable copy of the side state (None: nothing to save)."""
        return None

    def load_side_state(self, state: Any) -> None:
        """Restore what `side_state` returned."""

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within: losses may be computed, but the module does not train itself."""
        yield
