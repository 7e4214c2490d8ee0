"""The lift: a hypernetwork emits the ICNN's tensors from a summary of the training batch.

    s(X)   = mean_i phi(x_i)                 phi: per-sample ReLU MLP, widths `body`
    s      <- standardise(s)                 when pool_norm
    theta~ = Theta s + b                     b: per-entry slack (constrained entries start at -2)
    W      = softplus(theta~)                constrained tensors; free tensors take theta~ as is

The conditioning batch is detached, so derivatives of E in x see the emitted weights as
constants and E stays convex in x. Evaluation pins one emission pooled over the training split.

Ablations, each deleting one ingredient (method=lift_noslack / lift_nocond / lift_nostoch):
slack=false (b fixed), condition=constant (the body reads a learned code, not the batch),
stochastic=false (the summary pools the whole training split every step). The paper
authors' nearest two: condition=frozen (lift_constpn: the summary fixed at one batch's and
the body frozen, so neither conditioning nor jitter) and condition=independent (lift_indep:
the body reads rows drawn apart from the gradient's batch: jitter without coupling).
Their code's lift also keeps a ReLU after the body's last layer (summary_relu) and starts
the free tensors' readout biases as an nn.Linear's (free_bias_init=linear).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.errors import ConfigError
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec

_POOL_CHUNK = 65_536
CONDITIONS = ("batch", "constant", "frozen", "independent")
FROZEN_BATCH = 256  # condition=frozen: the rows its fixed summary pools (the authors': 256)


class LiftWeights(ConstraintMethod):
    batches_well_on_cpu = False  # the readout is memory-bound: S seeds' worth spill the cache

    @classmethod
    def training_bytes_per_entry(cls, options: dict) -> float:
        """The readout holds a row of summary-size floats per ICNN entry; training keeps up
        to 8 copies of it at once (parameter, gradient, its outer-product temporaries, two
        Adam moments, a checkpoint's clone and its serialisation): measured 5.4 without
        checkpoints."""
        body = options.get("body") or (64, 64, 96)
        width = body[-1] if isinstance(body, list | tuple) and checks.is_int(body[-1]) else 96
        return 4.0 * 8 * width + 4.0 * 6

    def __init__(
        self,
        spec: ICNNSpec,
        init: dict[str, Tensor],
        body: tuple[int, ...] = (64, 64, 96),
        pool_norm: bool = True,
        slack_init: float = -2.0,
        emit: Literal["all", "constrained"] = "all",
        slack: bool = True,
        condition: Literal["batch", "constant", "frozen", "independent"] = "batch",
        stochastic: bool = True,
        summary_relu: bool = False,
        free_bias_init: Literal["template", "linear"] = "template",
    ) -> None:
        super().__init__(spec)
        _check_options(body, pool_norm, slack_init, emit, slack, condition, stochastic)
        checks.boolean("method.summary_relu", summary_relu)
        checks.choice("method.free_bias_init", free_bias_init, ("template", "linear"))
        self.condition = condition
        self.stochastic = stochastic
        self.conditions_on_batch = condition in ("batch", "independent") and stochastic
        self.stackable = condition != "independent"  # its own draws: not under vmap
        self.register_buffer("_frozen_summary", None, persistent=False)
        # a buffer, so that seeds stacked into one vmapped model each pool their own split
        self.register_buffer("_split", None, persistent=False)
        self.pool_norm = pool_norm
        # the draws below come in this order (body, readout, slack, code, independent seed):
        # the committed results depend on it
        self.body = _relu_mlp(spec.dim, body, relu_last=summary_relu)
        self._layout = [(t.name, t.shape, t.constrained) for t in spec.tensors()]
        self._layout = [entry for entry in self._layout if emit == "all" or entry[2]]
        self._sizes = [math.prod(shape) for _, shape, _ in self._layout]
        bound = 1.0 / math.sqrt(body[-1])
        self.readout = nn.Parameter((torch.rand(sum(self._sizes), body[-1]) * 2 - 1) * bound)
        # ablation slack=false: b stays at its initial value (no gradient reaches it)
        initial = self._initial_slack(init, slack_init, free_bias_init == "template", bound)
        self.slack = nn.Parameter(initial, requires_grad=slack)
        emitted = {name for name, _, _ in self._layout}
        self.free = nn.ParameterDict(
            {k: nn.Parameter(v.clone()) for k, v in init.items() if k not in emitted}
        )
        self._last_pre: dict[str, Tensor] = {}
        # ablation condition=constant: the body reads this learned code instead of the batch
        self.code = nn.Parameter(torch.randn(1, spec.dim)) if condition == "constant" else None
        # ablation condition=independent: the body reads rows drawn apart from the batch
        self._independent = None
        if condition == "independent":
            seed = int(torch.randint(2**62, (1,)))
            self._independent = torch.Generator().manual_seed(seed)
        if condition == "frozen":  # the summary is fixed at one batch's; only readouts train
            self.body.requires_grad_(False)
        mask = [torch.full((n,), c, dtype=torch.bool) for (_, _, c), n in self._entries()]
        self.register_buffer("_constrained_slots", torch.cat(mask), persistent=False)

    def _entries(self) -> list[tuple[tuple[str, tuple[int, ...], bool], int]]:
        return list(zip(self._layout, self._sizes, strict=True))

    def _initial_slack(
        self, init: dict[str, Tensor], slack_init: float, template: bool, bound: float
    ) -> Tensor:
        """b of each emitted tensor: `slack_init` for constrained ones; free ones start at the
        ICNN's init (`template`) or as an nn.Linear's default bias."""
        parts = []
        for (name, _, constrained), size in self._entries():
            if constrained:
                parts.append(torch.full((size,), slack_init))
            elif template:
                parts.append(init[name].reshape(-1))
            else:
                parts.append((torch.rand(size) * 2 - 1) * bound)
        return torch.cat(parts)

    def use_training_split(self, train: Tensor) -> None:
        """The training split: the stochastic=false ablation pools all of it every step,
        condition=frozen fixes its summary at its first FROZEN_BATCH rows, and
        condition=independent draws the body's rows from it."""
        self._split = train
        if self.condition == "frozen":
            with torch.no_grad():
                self._frozen_summary = self.summary(train[:FROZEN_BATCH])

    def conditioning(self, batch: Tensor | None) -> Tensor:
        """What the body reads this step: the batch, or what an ablation puts in its place."""
        if self.code is not None:
            return self.code
        if not self.stochastic:
            if self._split is None:
                raise RuntimeError("stochastic=false needs use_training_split(train) first")
            return self._split
        if batch is None:
            raise RuntimeError("the lift emits weights from a batch of data; none was given")
        if self._independent is not None:
            if self._split is None:
                raise RuntimeError("condition=independent needs use_training_split(train)")
            rows = torch.randint(
                self._split.shape[0], (batch.shape[0],), generator=self._independent
            )
            return self._split[rows.to(self._split.device)]
        return batch

    def summary(self, data: Tensor) -> Tensor:
        """Permutation-invariant summary of a set of samples (rows of `data`)."""
        if data is not self.code:
            data = data.detach()  # the data are conditioning only; a learned code trains
        if data.shape[0] <= _POOL_CHUNK:
            pooled = self.body(data).mean(0)
        else:
            total = sum(self.body(chunk).sum(0) for chunk in data.split(_POOL_CHUNK))
            pooled = total / data.shape[0]
        if self.pool_norm:
            pooled = (pooled - pooled.mean()) / (pooled.std() + 1e-5)
        return pooled

    def emit(self, batch: Tensor | None) -> dict[str, Tensor]:
        if self.condition == "frozen":
            return self._emit_from_summary(self._frozen())
        return self._emit_from_summary(self.summary(self.conditioning(batch)))

    def _frozen(self) -> Tensor:
        if self._frozen_summary is None:
            raise RuntimeError("condition=frozen needs use_training_split(train) first")
        return self._frozen_summary

    def emit_pinned(self, pool: Tensor) -> dict[str, Tensor]:
        """The evaluation emission: the summary pooled over `pool` (the learned code for
        condition=constant)."""
        if self.code is not None:
            return self.emit(None)
        if self.condition == "frozen":
            return self._emit_from_summary(self._frozen())
        return self._emit_from_summary(self.summary(pool))

    def probe_slack(self) -> tuple[Tensor, Tensor] | None:
        if not self.slack.requires_grad:  # slack=false: b is fixed, no gradient reaches it
            return None
        return self.slack, self._constrained_slots

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

    def side_state(self) -> dict[str, Tensor]:
        return dict(self._last_pre)

    def load_side_state(self, state: dict[str, Tensor]) -> None:
        self._last_pre = dict(state)

    def constrained_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.readout, self.slack) if p.requires_grad]


def _relu_mlp(dim_in: int, widths: tuple[int, ...], relu_last: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(dim_in, width), nn.ReLU()]
        dim_in = width
    # ours: the summary features stay linear; the authors' code keeps the last ReLU
    return nn.Sequential(*(layers if relu_last else layers[:-1]))


def _check_options(
    body: Any,
    pool_norm: Any,
    slack_init: Any,
    emit: Any,
    slack: Any,
    condition: Any,
    stochastic: Any,
) -> None:
    checks.choice("method.condition", condition, CONDITIONS)
    checks.boolean("method.slack", slack)
    checks.boolean("method.stochastic", stochastic)
    if emit not in ("all", "constrained"):
        raise ConfigError(f"method.emit={emit!r}; choose one of: all, constrained")
    checks.int_list("method.body", body)
    checks.boolean("method.pool_norm", pool_norm)
    checks.number("method.slack_init", slack_init, minimum=-math.inf)
