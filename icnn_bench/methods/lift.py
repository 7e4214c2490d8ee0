"""The lift: a hypernetwork emits the ICNN's tensors from a summary of the training batch.

    s(X)   = mean_i phi(x_i)                 phi: per-sample ReLU MLP, widths `body`
    s      <- standardise(s)                 when pool_norm
    theta~ = Theta s + b                     b: per-entry slack (constrained entries start at -2)
    W      = softplus(theta~)                constrained tensors; free tensors take theta~ as is

The conditioning batch is detached, so derivatives of E in x see the emitted weights as
constants and E stays convex in x. Evaluation pins one emission pooled over the training split.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icnn_bench.errors import ConfigError
from icnn_bench.methods.base import WeightSource
from icnn_bench.models.icnn import ICNNSpec

_POOL_CHUNK = 65_536


class LiftWeights(WeightSource):
    name = "lift"

    def __init__(
        self,
        spec: ICNNSpec,
        init: dict[str, Tensor],
        body: tuple[int, ...] = (64, 64, 96),
        pool_norm: bool = True,
        slack_init: float = -2.0,
        emit: Literal["all", "constrained"] = "all",
        pinned_pool: str | int = "split",
    ) -> None:
        super().__init__(spec)
        if emit not in ("all", "constrained"):
            raise ConfigError(f"method.emit={emit!r}; choose one of: all, constrained")
        if not body or any(not isinstance(w, int) or w <= 0 for w in body):
            raise ConfigError(
                f"method.body={list(body)!r} must be a non-empty list of positive ints"
            )
        if pinned_pool != "split" and not (isinstance(pinned_pool, int) and pinned_pool > 0):
            raise ConfigError(f"method.pinned_pool={pinned_pool!r}; use 'split' or a positive int")
        self.pool_norm = pool_norm
        self.pinned_pool = pinned_pool
        self.body = _relu_mlp(spec.dim, body)

        emitted = [t for t in spec.tensors() if emit == "all" or t.constrained]
        self._layout: list[tuple[str, tuple[int, ...], bool]] = [
            (t.name, t.shape, t.constrained) for t in emitted
        ]
        self._sizes = [math.prod(shape) for _, shape, _ in self._layout]
        summary_dim = body[-1]
        bound = 1.0 / math.sqrt(summary_dim)
        n_out = sum(self._sizes)
        self.readout = nn.Parameter((torch.rand(n_out, summary_dim) * 2 - 1) * bound)
        slack = [
            torch.full((size,), slack_init) if constrained else init[name].reshape(-1)
            for (name, _, constrained), size in zip(self._layout, self._sizes, strict=True)
        ]
        self.slack = nn.Parameter(torch.cat(slack))
        emitted_names = {name for name, _, _ in self._layout}
        self.free = nn.ParameterDict(
            {k: nn.Parameter(v.clone()) for k, v in init.items() if k not in emitted_names}
        )
        self._last_pre: dict[str, Tensor] = {}

    def summary(self, data: Tensor) -> Tensor:
        """Permutation-invariant summary of a set of samples (rows of `data`)."""
        data = data.detach()
        if data.shape[0] <= _POOL_CHUNK:
            pooled = self.body(data).mean(0)
        else:
            total = sum(self.body(chunk).sum(0) for chunk in data.split(_POOL_CHUNK))
            pooled = total / data.shape[0]
        if self.pool_norm:
            pooled = (pooled - pooled.mean()) / (pooled.std() + 1e-5)
        return pooled

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        if batch is None:
            raise RuntimeError("the lift emits weights from a batch of data; none was given")
        return self._emit_from_summary(self.summary(batch))

    def emit_pinned(self, train_data: Tensor) -> dict[str, Tensor]:
        pool = train_data if self.pinned_pool == "split" else train_data[: self.pinned_pool]
        return self._emit_from_summary(self.summary(pool))

    def _emit_from_summary(self, summary: Tensor) -> dict[str, Tensor]:
        theta = torch.addmv(self.slack, self.readout, summary)
        params: dict[str, Tensor] = dict(self.free.items())
        pre: dict[str, Tensor] = {}
        chunks = theta.split(self._sizes)
        for (name, shape, constrained), chunk in zip(self._layout, chunks, strict=True):
            value = chunk.view(shape)
            if constrained:
                pre[name] = value.detach()
                value = F.softplus(value)
            params[name] = value
        self._last_pre = pre
        return params

    def pre_positivity(self) -> dict[str, Tensor]:
        return self._last_pre

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [self.readout, self.slack]


def _relu_mlp(dim_in: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(dim_in, width), nn.ReLU()]
        dim_in = width
    return nn.Sequential(*layers[:-1])  # the summary features stay linear
