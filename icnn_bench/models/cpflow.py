"""Convex-potential flow: blocks x -> grad F(x), optionally with ActNorm in front of each,
onto a standard normal base. Every block's ICNN tensors come from its own weight method.

The lift's methods all condition on the data batch (detached), so within a step each block
is one fixed convex potential and its Jacobian stays a symmetric positive-definite Hessian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.errors import ConfigError
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models import potential
from icnn_bench.models.base import DensityModel
from icnn_bench.models.icnn import ICNNSpec
from icnn_bench.models.logdet import PROBES, draw_probe, stochastic_log_det

LOG_DETS = ("auto", "exact", "stochastic")
CPU_TRAIN_CHUNK = 128  # results/bench_cpflow.md: cache-sized on a 2-core CPU


def _softplus_inverse(value: float) -> float:
    return math.log(math.expm1(value))


@dataclass(frozen=True)
class LogDetSettings:
    kind: str = "auto"  # auto: exact up to max_exact_dim, stochastic above
    max_exact_dim: int = 64
    cg_iters: int = 32
    cg_rtol: float = 1e-4
    probe: str = "rademacher"
    eval_chunk: int = 2048  # rows per evaluation chunk (exact Hessians are n x d x d)
    # exact training: rows per forward/backward chunk; None: CPU_TRAIN_CHUNK on a CPU (the
    # chunk's Jacobians stay in cache), the whole batch on a GPU (one launch per layer)
    train_chunk: int | None = None

    def resolve(self, dim: int) -> str:
        for key in ("max_exact_dim", "cg_iters", "eval_chunk"):
            checks.integer(f"model.{key}", getattr(self, key))
        checks.integer("model.train_chunk", self.train_chunk, optional=True)
        if not (checks.is_number(self.cg_rtol) and 0 < self.cg_rtol < 1):
            raise ConfigError(f"model.cg_rtol={self.cg_rtol!r} must lie in (0, 1)")
        if self.kind not in LOG_DETS:
            raise ConfigError(f"model.log_det={self.kind!r}; choose one of: {', '.join(LOG_DETS)}")
        if self.probe not in PROBES:
            raise ConfigError(f"model.probe={self.probe!r}; choose one of: {', '.join(PROBES)}")
        if self.kind == "auto":
            return "exact" if dim <= self.max_exact_dim else "stochastic"
        if self.kind == "exact" and dim > self.max_exact_dim:
            raise ConfigError(
                f"model.log_det=exact at d={dim} forms {dim}x{dim} Hessians per sample (limit "
                f"model.max_exact_dim={self.max_exact_dim}); use model.log_det=stochastic "
                "(Hutchinson + conjugate gradients) or raise model.max_exact_dim"
            )
        return self.kind


class ActNorm(nn.Module):
    """Elementwise affine z = (x - shift) * exp(log_scale), data-initialised to standardise."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    @torch.no_grad()
    def initialise(self, x: Tensor) -> None:
        self.shift.copy_(x.mean(0))
        self.log_scale.copy_(-x.std(0).clamp_min(1e-6).log())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = (x - self.shift) * self.log_scale.exp()
        return z, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor) -> Tensor:
        return z * (-self.log_scale).exp() + self.shift


class PotentialBlock(nn.Module):
    """y = grad F(x) with F = softplus(w1) E_icnn + softplus(w0) |x|^2 / 2."""

    def __init__(self, spec: ICNNSpec, method: ConstraintMethod) -> None:
        super().__init__()
        self.spec = spec
        self.method = method
        self.w0 = nn.Parameter(torch.tensor(_softplus_inverse(1.0)))  # map starts near identity
        self.w1 = nn.Parameter(torch.tensor(_softplus_inverse(1.0)))

    def exact(self, x: Tensor, params: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        y, hess = potential.gradient_and_hessian(params, x, self.spec, self.w0, self.w1)
        return y, potential.cholesky_log_det(hess)

    def gradient(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return potential.potential_gradient(params, x, self.spec, self.w0, self.w1)

    def inverse(self, y: Tensor, params: dict[str, Tensor]) -> Tensor:
        return potential.inverse(params, y, self.spec, self.w0.detach(), self.w1.detach())


class ConvexPotentialFlow(DensityModel):
    """Stacked CP-Flow blocks; log p(x) = log N(z) + sum of block log-dets."""

    exact_sampler = True

    def __init__(
        self,
        blocks: list[PotentialBlock],
        actnorm: bool,
        log_det: LogDetSettings,
        seed: int = 0,
    ) -> None:
        super().__init__()
        dim = blocks[0].spec.dim
        self.dim = dim
        self.blocks = nn.ModuleList(blocks)
        self.actnorms = nn.ModuleList([ActNorm(dim) for _ in blocks]) if actnorm else None
        self.settings = log_det
        self.train_log_det = log_det.resolve(dim)
        self.eval_log_det = "exact" if dim <= log_det.max_exact_dim else "stochastic"
        self._probes = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def initialise_actnorms(self, train: Tensor) -> None:
        """Data-dependent init: each ActNorm standardises what reaches it at initialisation."""
        if self.actnorms is None:
            return
        x = train
        for block, norm in zip(self.blocks, self.actnorms, strict=True):
            norm.initialise(x)
            x, _ = norm(x)
            x = block.gradient(x, block.method(train))

    def loss(self, batch: Tensor) -> Tensor:
        log_prob = self._log_prob(batch, conditioning=batch.detach(), mode=self.train_log_det)
        return self.with_penalty(-log_prob.mean())

    def loss_backward(self, batch: Tensor) -> Tensor:
        """Exact log-det training in cache-sized chunks: the per-layer Jacobians of a chunk stay
        in cache through forward and backward. Each block's emission is computed once for the
        whole batch (the lift conditions on all of it); the chunks' gradients with respect to the
        emitted tensors are summed, then sent back through the emission in one pass."""
        chunk = self.settings.train_chunk or (
            CPU_TRAIN_CHUNK if batch.device.type == "cpu" else batch.shape[0]
        )
        if self.train_log_det != "exact" or batch.shape[0] <= chunk:
            return super().loss_backward(batch)
        emitted = [block.method(batch.detach()) for block in self.blocks]
        leaves = [{k: v.detach().requires_grad_(True) for k, v in e.items()} for e in emitted]
        total = torch.zeros((), dtype=batch.dtype, device=batch.device)
        for part in batch.split(chunk):
            log_prob = self._log_prob(part, conditioning=None, mode="exact", emitted=leaves)
            part_loss = -log_prob.sum() / batch.shape[0]
            part_loss.backward()
            total = total + part_loss.detach()
        tensors = [v for e in emitted for v in e.values() if v.requires_grad]
        grads = [
            leaf[k].grad
            for e, leaf in zip(emitted, leaves, strict=True)
            for k, v in e.items()
            if v.requires_grad
        ]
        pairs = [(t, g) for t, g in zip(tensors, grads, strict=True) if g is not None]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        penalty = self.with_penalty(torch.zeros((), device=batch.device))
        if penalty.requires_grad:
            penalty.backward()
            total = total + penalty.detach()
        return total

    @torch.no_grad()
    def log_prob(self, x: Tensor) -> Tensor:
        chunk = self.settings.eval_chunk
        parts = [
            self._log_prob(part, conditioning=None, mode=self.eval_log_det, training=False)
            for part in x.split(chunk)
        ]
        return torch.cat(parts)

    def differentiable_log_prob(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            return self._log_prob(x, conditioning=None, mode="exact", training=False)

    def transform(self, x: Tensor) -> Tensor:
        """z = the flow's image of x under the evaluation weights."""
        with torch.no_grad():
            for index, block in enumerate(self.blocks):
                if self.actnorms is not None:
                    x, _ = self.actnorms[index](x)
                x = block.gradient(x, block.method(None))
        return x

    @torch.no_grad()
    def inverse(self, z: Tensor) -> Tensor:
        """x with transform(x) = z (Newton per block; raises potential.InversionError)."""
        for index in reversed(range(len(self.blocks))):
            block = self.blocks[index]
            z = block.inverse(z, block.method(None))
            if self.actnorms is not None:
                z = self.actnorms[index].inverse(z)
        return z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator, start: Tensor | None = None) -> Tensor:
        """n draws by inverting the flow at base draws (`start` is not needed)."""
        z = torch.randn(n, self.dim, generator=generator).to(self.device)
        return self.inverse(z)

    def evaluation_info(self, target: Any) -> dict[str, Any]:
        return {"log_det": self.eval_log_det, **flow_checks(self, target)}

    def _log_prob(
        self,
        x: Tensor,
        conditioning: Tensor | None,
        mode: str,
        training: bool = True,
        emitted: list[dict[str, Tensor]] | None = None,
    ) -> Tensor:
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for index, block in enumerate(self.blocks):
            if self.actnorms is not None:
                x, log_det = self.actnorms[index](x)
                total = total + log_det
            params = emitted[index] if emitted is not None else block.method(conditioning)
            if mode == "exact":
                x, log_det = block.exact(x, params)
            else:
                x, log_det = self._stochastic_block(block, x, params, training)
            total = total + log_det
        return potential.standard_normal_log_prob(x) + total

    def _stochastic_block(
        self, block: PotentialBlock, x: Tensor, params: dict[str, Tensor], training: bool
    ) -> tuple[Tensor, Tensor]:
        """Lanczos value with a Hutchinson/CG gradient: value + (surrogate - its value)."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            y = block.gradient(x, params)
            probe = draw_probe(tuple(x.shape), self.settings.probe, self._probes, x)
            estimate = stochastic_log_det(
                y,
                x,
                probe,
                max_iters=min(self.settings.cg_iters, 2 * self.dim),
                rtol=self.settings.cg_rtol,
                create_graph=training,
            )
        if not training:
            return y.detach(), estimate.value
        return y, estimate.value + estimate.surrogate - estimate.surrogate.detach()


def flow_checks(model: DensityModel, target: Any, widen: float = 3.0) -> dict[str, float]:
    """Where the flow's density is reported: in 2-D and below, its total mass on a grid over
    the target's box widened `widen` times (1 up to grid error if it is normalised)."""
    box = target.box()
    if target.dim > 2 or box is None:
        return {}
    from icnn_bench.log_z.quadrature import midpoint_grid

    wide = [
        ((lo + hi) / 2 - widen * (hi - lo) / 2, (lo + hi) / 2 + widen * (hi - lo) / 2)
        for lo, hi in box
    ]
    nodes, log_cell = midpoint_grid(wide, 8000 if target.dim == 1 else 300 * 300)
    log_p = model.log_prob(nodes.to(model.device)).double()
    return {"grid_mass": float(torch.logsumexp(log_p, 0).exp() * math.exp(log_cell))}
