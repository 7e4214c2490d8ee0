"""What the training loop needs from a model: a loss, a normalised log-density, the hooks of
its constraint methods (pin for evaluation, project after a step, diagnostics), and the
optional capabilities it declares (sampling, an evaluation grid of its own, batching seeds)."""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench.devices import isolated_global_rng
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.side_state import SideState


class DensityModel(nn.Module, ABC):
    """A trainable density. Convex models hold one or more constraint methods; a reference
    flow holds none, so its method hooks do nothing."""

    #: the comparison column: set by the builder from the config (method or model name)
    method_name: str | None = None
    #: `sample` draws exactly (a flow's inverse), not by a Markov chain
    exact_sampler: bool = False

    def constraint_methods(self) -> list[ConstraintMethod]:
        return [m for m in self.modules() if isinstance(m, ConstraintMethod)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @abstractmethod
    def loss(self, batch: Tensor) -> Tensor:
        """Training objective on a batch: the mean negative log-likelihood (or its estimate)."""

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density under the evaluation (pinned) weights, (n,)."""

    def differentiable_log_prob(self, x: Tensor) -> Tensor:
        """log_prob(x) with the graph to x kept (for scores), under the evaluation weights."""
        raise NotImplementedError(f"{type(self).__name__} has no differentiable log-density")

    def loss_backward(self, batch: Tensor) -> Tensor:
        """loss(batch).backward(); returns the detached loss. Models may split the work."""
        loss = self.loss(batch)
        loss.backward()
        return loss.detach()

    # -- optional capabilities (defaults: not there) --------------------------------------

    def own_metrics(self, rows: Tensor, target: Any) -> dict[str, float] | None:
        """For a model that is not a density (an OT map): its metrics on data rows, in place
        of the NLLs (validation ones get a `val_` prefix). None: a density, scored by NLL."""
        return None

    def evaluation_info(self, target: Any) -> dict[str, Any]:
        """Extra final metrics (e.g. the log Z estimate and its standard error)."""
        return {}

    def map_pairs(self, rows: Tensor, target: Any) -> Any:
        """For a transport model: a table of rows x, their learned images and true images (for
        pictures); None for a density."""
        return None

    def evaluation_grid(self, target: Any) -> tuple[Tensor, float] | None:
        """Equal-cell nodes on the target's box (d <= 2) for grid metrics, and log cell volume."""
        from icnn_bench.log_z.quadrature import midpoint_grid

        box = target.box()
        if box is None or target.dim > 2:
            return None
        nodes, log_cell = midpoint_grid(box, 8000 if target.dim == 1 else 200 * 200)
        return nodes.to(self.device), log_cell

    @property
    def can_sample(self) -> bool:
        return type(self).sample is not DensityModel.sample

    def sample(self, n: int, generator: torch.Generator, start: Tensor | None = None) -> Tensor:
        """n draws from the evaluation model (`start`: where a Markov chain may begin)."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def warm_up(self, next_batch: Callable[[], Tensor]) -> None:
        """Before the first step (a learned log Z sampler fits the initial energy)."""

    def diagnostics(self, pool: Tensor) -> dict[str, float]:
        """Extra metrics.csv columns at each evaluation (`pool`: the evaluation pool)."""
        return {}

    def training_summary(self) -> dict[str, Any]:
        """Extra result.json entries about training."""
        return {}

    def vectorization_problem(self) -> str | None:
        """Why seeds of this model cannot be stacked into one vmapped model, or None."""
        return f"trainer.vectorize=true does not support {type(self).__name__} models"

    # -- constraint-method hooks ---------------------------------------------------------

    def use_training_split(self, train: Tensor) -> None:
        for method in self.constraint_methods():
            method.use_training_split(train)

    def after_step(self) -> None:
        for method in self.constraint_methods():
            method.project_()

    def pin(self, pool: Tensor) -> None:
        for method in self.constraint_methods():
            method.pin(pool)

    def unpin(self) -> None:
        for method in self.constraint_methods():
            method.unpin()

    def dead_fraction(self) -> float:
        methods = self.constraint_methods()
        if not methods:
            return math.nan
        values = [method.dead_fraction() for method in methods]
        sizes = [sum(u.numel() for u in m.pre_positivity().values()) for m in methods]
        return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)

    def with_penalty(self, loss: Tensor) -> Tensor:
        """`loss` plus the methods' training-loss terms (most methods have none)."""
        for method in self.constraint_methods():
            term = method.penalty()
            if term is not None:
                loss = loss + term
        return loss

    def method_diagnostics(self) -> dict[str, float]:
        """The methods' own metrics.csv columns (averaged over a flow's blocks)."""
        rows = [m.diagnostics() for m in self.constraint_methods()]
        keys = dict.fromkeys(k for row in rows for k in row)
        return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [p for method in self.constraint_methods() for p in method.constrained_parameters()]

    def pinned_state(self) -> list[dict[str, Tensor]]:
        return [
            {k: v.cpu() for k, v in (m.pinned or {}).items()} for m in self.constraint_methods()
        ]

    def set_pinned_state(self, pinned: list[dict[str, Tensor]]) -> None:
        for method, params in zip(self.constraint_methods(), pinned, strict=True):
            method.set_pinned(params)

    # -- state beyond the state dict: random streams and side state ----------------------

    def rng_states(self) -> dict[str, Tensor]:
        """States of the random streams held by the model's modules (probes, proposal draws),
        by `<module path>.<attribute>`: part of a checkpoint."""
        return {
            f"{path}.{attr}": value.get_state()
            for path, module in self.named_modules()
            for attr, value in vars(module).items()
            if isinstance(value, torch.Generator)
        }

    def set_rng_states(self, states: dict[str, Tensor]) -> None:
        for key, state in states.items():
            path, attr = key.rsplit(".", 1)
            module = self.get_submodule(path)
            generator = getattr(module, attr, None)
            if not isinstance(generator, torch.Generator):  # a stream created lazily
                generator = torch.Generator()  # the project's streams live on the CPU
                setattr(module, attr, generator)
            generator.set_state(state)

    def side_states(self) -> dict[str, Any]:
        """Every submodule's side state (optimizers of learned proposals, last emissions)."""
        return {
            path: module.side_state()
            for path, module in self.named_modules()
            if isinstance(module, SideState)
        }

    def load_side_states(self, states: dict[str, Any]) -> None:
        for path, state in states.items():
            self.get_submodule(path).load_side_state(state)

    @contextlib.contextmanager
    def undisturbed(self) -> Iterator[None]:
        """Evaluate extra losses (a diagnostic probe) without moving any training state:
        random streams, global RNG, side state; self-training submodules hold still."""
        streams, sides = self.rng_states(), self.side_states()
        with contextlib.ExitStack() as stack:
            for module in self.modules():
                if isinstance(module, SideState):
                    stack.enter_context(module.frozen())
            stack.enter_context(isolated_global_rng())
            try:
                yield
            finally:
                self.set_rng_states(streams)
                self.load_side_states(sides)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
