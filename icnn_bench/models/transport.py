"""Optimal transport by the W2 dual with two convex potentials (the minimax of Makkuva et al.,
ICML 2020, as ott-jax's W2NeuralDual trains it):

    min_psi max_phi  E_P psi(X) + E_Q [ <grad phi(Y), Y> - psi(grad phi(Y)) ]

The inner maximum over phi is psi's convex conjugate psi*(Y) (reached at grad phi = grad psi*),
so the outer problem is the semi-dual, whose minimiser psi gives the OT map T = grad psi from
P to Q. psi and phi are CP-Flow potentials, F = softplus(w1) ICNN + softplus(w0) |x|^2/2, each
with its own constraint method: the training loop's optimizer steps psi; `inner_steps` Adam
steps on phi (fresh Q draws each) come first in every loss. A batch-conditioned method (the
lift) summarises P's batch for psi and Q's batch for phi. A penalty method's term is added to
its own network's loss only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from icnn_bench.loop import clip_gradients
from icnn_bench.models.base import DensityModel
from icnn_bench.models.cpflow import PotentialBlock
from icnn_bench.models.potential import potential
from icnn_bench.side_state import SideState
from icnn_bench.targets.transport import TransportPair

OWN_METRICS = ("l2_uvp", "cos_gap", "w2_rel_err")


class _InnerOptimizer(nn.Module, SideState):
    """phi's Adam: its state travels in checkpoints; a diagnostic probe holds it still."""

    def __init__(self, phi: PotentialBlock, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.params = [p for p in phi.parameters() if p.requires_grad]
        self.adam: torch.optim.Adam | None = None
        self.active = True

    def step(self, loss: Tensor) -> None:
        if not self.active:
            return
        if self.adam is None:
            self.adam = self._adam()
        grads = torch.autograd.grad(loss, self.params)
        for param, grad in zip(self.params, grads, strict=True):
            param.grad = grad
        clip_gradients(self.params, 1.0)
        self.adam.step()
        self.adam.zero_grad(set_to_none=True)

    def side_state(self) -> dict[str, Any] | None:
        return None if self.adam is None else self.adam.state_dict()

    def load_side_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.adam = None
            return
        self.adam = self._adam()
        self.adam.load_state_dict(state)

    def _adam(self) -> torch.optim.Adam:
        try:  # fused where the build has it, as the training loop's optimizer
            return torch.optim.Adam(self.params, lr=self.lr, fused=True)
        except (RuntimeError, TypeError):
            return torch.optim.Adam(self.params, lr=self.lr)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.active = False
        try:
            yield
        finally:
            self.active = True


class DualPotentials(DensityModel):
    """The OT map T = grad psi from P (the data rows) to Q (drawn from the pair)."""

    def __init__(
        self,
        psi: PotentialBlock,
        phi: PotentialBlock,
        pair: TransportPair,
        inner_steps: int = 10,
        inner_lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.psi, self.phi, self.pair = psi, phi, pair
        self.inner_steps = inner_steps
        self.inner = _InnerOptimizer(phi, inner_lr)
        self._q_draws = torch.Generator().manual_seed(30_011 + seed)
        self._seed = seed

    def trainable_parameters(self) -> list[nn.Parameter]:
        """psi's: the loop's optimizer steps psi; phi has its own (the inner maximisation)."""
        return [p for p in self.psi.parameters() if p.requires_grad]

    def _draw_q(self, n: int, like: Tensor) -> Tensor:
        return self.pair.sample_q(n, self._q_draws).to(like)

    def _inner_value(self, y: Tensor, psi_params: dict[str, Tensor]) -> Tensor:
        """E_Q[<grad phi(Y), Y> - psi(grad phi(Y))], differentiable in phi."""
        x_hat = self.phi.gradient(y, self.phi.method(y))
        psi_at = potential(psi_params, x_hat, self.psi.spec, self.psi.w0, self.psi.w1)
        return ((x_hat * y).sum(-1) - psi_at).mean()

    def _fit_phi(self, n: int, like: Tensor, psi_params: dict[str, Tensor]) -> None:
        frozen = {k: v.detach() for k, v in psi_params.items()}
        for _ in range(self.inner_steps):
            y = self._draw_q(n, like)
            loss = -self._inner_value(y, frozen)
            penalty = self.phi.method.penalty()
            self.inner.step(loss if penalty is None else loss + penalty)
            self.phi.method.project_()

    def loss(self, batch: Tensor) -> Tensor:
        """The dual objective on a batch of P and one of Q, after phi's inner steps; its
        gradient reaches psi only."""
        psi_params = self.psi.method(batch)
        with torch.enable_grad():
            self._fit_phi(batch.shape[0], batch, psi_params)
        y = self._draw_q(batch.shape[0], batch)
        with torch.no_grad():
            x_hat = self.phi.gradient(y, self.phi.method(y))
        psi = self.psi
        on_p = potential(psi_params, batch, psi.spec, psi.w0, psi.w1).mean()
        on_q = potential(psi_params, x_hat, psi.spec, psi.w0, psi.w1)
        objective = on_p + ((x_hat * y).sum(-1) - on_q).mean()
        penalty = psi.method.penalty()
        return objective if penalty is None else objective + penalty

    def transport(self, x: Tensor) -> Tensor:
        """T(x) = grad psi(x) under the evaluation (pinned) weights."""
        return self.psi.gradient(x, self.psi.method(x))

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError("an OT model has no density; it is scored by its map")

    @torch.no_grad()
    def own_metrics(self, rows: Tensor, target: Any) -> dict[str, float]:
        """L2-UVP (Korotin et al. 2021: 100 E_P|T(x) - T*(x)|^2 / Var Q), 1 - cos between T - id
        and T* - id in L2(P), and the relative error of W2^2 estimated as E_P|T(x) - x|^2."""
        fitted = self.transport(rows)  # the structured gradient: no autograd needed
        true = self.pair.true_map(rows)
        constants = self.pair.constants()
        error = ((fitted - true) ** 2).sum(-1).mean()
        moved, truly = fitted - rows, true - rows
        cosine = (moved * truly).sum() / (moved.norm() * truly.norm()).clamp_min(1e-12)
        w2 = (moved**2).sum(-1).mean()
        return {
            "l2_uvp": float(100 * error / constants["var_q"]),
            "cos_gap": float(1 - cosine),
            "w2_rel_err": float(abs(w2 - constants["w2_squared"]) / constants["w2_squared"]),
            "w2_squared": float(w2),
        }

    @torch.no_grad()
    def map_pairs(self, rows: Tensor, target: Any) -> pd.DataFrame:
        """x, y of each row, its image under the learned map (mx, my) and the true (tx, ty)."""
        fitted, true = self.transport(rows).cpu(), self.pair.true_map(rows).cpu()
        columns = {"x": rows[:, 0], "y": rows[:, 1], "mx": fitted[:, 0], "my": fitted[:, 1]}
        columns.update(tx=true[:, 0], ty=true[:, 1])
        return pd.DataFrame({k: v.cpu().numpy() for k, v in columns.items()})

    def evaluation_info(self, target: Any) -> dict[str, Any]:
        return {f"true_{k}": v for k, v in self.pair.constants().items()}

    def pin(self, pool: Tensor) -> None:
        """psi's emission pinned on P's pool, phi's on as many Q draws (a fixed stream)."""
        self.psi.method.pin(pool)
        stream = torch.Generator().manual_seed(40_009 + self._seed)
        self.phi.method.pin(self.pair.sample_q(pool.shape[0], stream).to(pool))

    def vectorization_problem(self) -> str | None:
        return "trainer.vectorize=true does not support OT models (phi trains inside the loss)"
