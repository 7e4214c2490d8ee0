"""What the training loop needs from a model: a loss, a normalised log-density, and the hooks
of its weight sources (pin for evaluation, project after a step, diagnostics)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench.methods.base import WeightSource


class DensityModel(nn.Module, ABC):
    """A trainable density. Convex models hold one or more weight sources; a reference flow
    holds none, so its weight-source hooks do nothing."""

    kind: str = "density"

    def weight_sources(self) -> list[WeightSource]:
        return [m for m in self.modules() if isinstance(m, WeightSource)]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @abstractmethod
    def loss(self, batch: Tensor) -> Tensor:
        """Training objective on a batch: the mean negative log-likelihood (or its estimate)."""

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Normalised log-density under the evaluation (pinned) weights, (n,)."""

    def loss_backward(self, batch: Tensor) -> Tensor:
        """loss(batch).backward(); returns the detached loss. Models may split the work."""
        loss = self.loss(batch)
        loss.backward()
        return loss.detach()

    def evaluation_info(self) -> dict[str, Any]:
        """Extra final metrics (e.g. the log Z estimate and its standard error)."""
        return {}

    def use_training_split(self, train: Tensor) -> None:
        for source in self.weight_sources():
            source.use_training_split(train)

    def after_step(self) -> None:
        for source in self.weight_sources():
            source.project_()

    def pin(self, train: Tensor) -> None:
        for source in self.weight_sources():
            source.pin(train)

    def unpin(self) -> None:
        for source in self.weight_sources():
            source.unpin()

    def dead_fraction(self) -> float:
        sources = self.weight_sources()
        if not sources:
            return math.nan
        values = [source.dead_fraction() for source in sources]
        sizes = [sum(u.numel() for u in s.pre_positivity().values()) for s in sources]
        return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [p for source in self.weight_sources() for p in source.constrained_parameters()]

    def pinned_state(self) -> list[dict[str, Tensor]]:
        return [{k: v.cpu() for k, v in (s.pinned or {}).items()} for s in self.weight_sources()]

    def set_pinned_state(self, pinned: list[dict[str, Tensor]]) -> None:
        for source, params in zip(self.weight_sources(), pinned, strict=True):
            source.set_pinned(params)

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
                generator = torch.Generator(device=self.device)
                setattr(module, attr, generator)
            generator.set_state(state)

    @property
    def method_name(self) -> str | None:
        sources = self.weight_sources()
        return sources[0].name if sources else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
