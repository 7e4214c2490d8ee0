"""A reference non-convex flow: zuko's masked autoregressive flow (MAF), trained by maximum
likelihood on the same data, so tables show where convex flows stand against a common pick."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from icnn_bench import checks
from icnn_bench.devices import isolated_global_rng
from icnn_bench.errors import ConfigError
from icnn_bench.models.base import DensityModel


class MAFReference(DensityModel):
    exact_sampler = True

    def __init__(self, dim: int, transforms: int = 5, hidden: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        try:
            import zuko
        except ImportError:
            raise ConfigError(
                "model=maf_reference needs zuko (a dependency of icnn-bench): pip install zuko"
            ) from None
        checks.integer("model.transforms", transforms)
        checks.int_list("model.hidden", hidden)
        self.flow = zuko.flows.MAF(dim, transforms=transforms, hidden_features=tuple(hidden))

    def loss(self, batch: Tensor) -> Tensor:
        return -self.flow().log_prob(batch).mean()

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow().log_prob(x)

    def differentiable_log_prob(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            return self.flow().log_prob(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, start: Tensor | None = None) -> Tensor:
        with isolated_global_rng():  # zuko samples from the global stream
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
            return self.flow().sample((n,))

    def evaluation_info(self, target: Any) -> dict[str, Any]:
        from icnn_bench.models.cpflow import flow_checks

        return flow_checks(self, target)
