"""log Z by importance sampling: log Z ~ logmeanexp(-E(y_k) - log q(y_k)), y_k ~ q.

By Jensen the estimate of log Z is biased low, so an NLL built on it is optimistic; the
evaluation reports its Monte Carlo standard error next to the value.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from icnn_bench import checks
from icnn_bench.devices import host_generator, isolated_global_rng, to_device
from icnn_bench.errors import ConfigError
from icnn_bench.log_z.base import LogZEstimate, LogZEstimator, NonFiniteWeights, snis_estimate
from icnn_bench.side_state import SideState


class GaussianProposal(nn.Module):
    """A Gaussian moment-matched to the training data, its covariance widened by `widen`^2."""

    def __init__(self, mean: Tensor, scale_tril: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale_tril", scale_tril.clone())

    @classmethod
    def from_data(cls, data: Tensor, widen: float = 1.5) -> GaussianProposal:
        if not (isinstance(widen, int | float) and math.isfinite(widen) and widen > 0):
            raise ConfigError(f"log_z.widen={widen!r} must be a positive number")
        data = data.double()
        cov = torch.atleast_2d(torch.cov(data.T))
        cov = cov + 1e-6 * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype)
        return cls(data.mean(0).float(), (torch.linalg.cholesky(cov) * widen).float())

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n draws and their log-density under the proposal."""
        dim = self.mean.shape[0]
        z = to_device(torch.randn(n, dim, generator=generator), self.mean.device)
        y = self.mean + z @ self.scale_tril.T
        log_det = self.scale_tril.diagonal().log().sum()
        log_q = -0.5 * (z * z).sum(-1) - log_det - 0.5 * dim * math.log(2 * math.pi)
        return y, log_q


class FlowProposal(nn.Module, SideState):
    """A learned proposal: an inverse-autoregressive flow from zuko, trained by reverse KL
    toward exp(-E) with one step per EBM step (as the paper does)."""

    def __init__(
        self,
        dim: int,
        transforms: int = 3,
        hidden: tuple[int, ...] = (64, 64),
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        try:
            import zuko
        except ImportError:
            raise ConfigError(
                "log_z.proposal=flow needs the zuko package: "
                "pip install zuko (a dependency of icnn-bench; or use proposal=gaussian)"
            ) from None
        autoregressive = zuko.flows.MAF(
            features=dim, transforms=transforms, hidden_features=tuple(hidden)
        )
        # inverted: sampling (needed every step) is one pass, density evaluation is d passes
        self.flow = zuko.flows.Flow(autoregressive.transform.inv, autoregressive.base)
        self.lr = lr
        self._optimizer: torch.optim.Optimizer | None = None

    def side_state(self) -> dict[str, Any] | None:
        """Its optimizer's state: a resumed run continues the proposal's training exactly."""
        return None if self._optimizer is None else self._optimizer.state_dict()

    def load_side_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self._optimizer = None
            return
        self._optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
        self._optimizer.load_state_dict(state)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with torch.no_grad(), isolated_global_rng():
            torch.manual_seed(seed)  # zuko draws from the global stream; keep it seeded
            y, log_q = self.flow().rsample_and_log_prob((n,))
        return y, log_q

    def update(
        self, energy_fn: Callable[[Tensor], Tensor], n: int, generator: torch.Generator
    ) -> float:
        """One reverse-KL step, KL(q || exp(-E)/Z) up to log Z; gradients reach the flow only.
        Its draws come from `generator` (zuko's from a global stream seeded from it)."""
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.lr)
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        with isolated_global_rng():
            torch.manual_seed(seed)
            y, log_q = self.flow().rsample_and_log_prob((n,))
        loss = (log_q + energy_fn(y)).mean()
        params = list(self.flow.parameters())
        grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class ImportanceLogZ(LogZEstimator):
    """Fresh proposal draws every training step; a fixed set of draws at evaluation."""

    estimate_kind = "importance"

    def __init__(
        self,
        proposal: GaussianProposal | FlowProposal,
        train_samples: int = 512,
        eval_samples: int = 8192,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for key, n in (("train_samples", train_samples), ("eval_samples", eval_samples)):
            checks.integer(f"log_z.{key}", n, minimum=2)
        self.proposal = proposal
        self.train_samples, self.eval_samples = train_samples, eval_samples
        self._seed = seed
        self._train_stream: torch.Generator | None = None
        self.update_proposal = True  # off while a diagnostic probe evaluates the loss

    def side_state(self) -> dict[str, Any]:
        # the training stream is created on first use: whether it exists is state too
        # (its draws are in the model's random-stream states)
        return {"stream_started": self._train_stream is not None}

    def load_side_state(self, state: dict[str, Any]) -> None:
        if not state["stream_started"]:
            self._train_stream = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.update_proposal = False
        try:
            yield
        finally:
            self.update_proposal = True

    def forward(self, energy_fn: Callable[[Tensor], Tensor], training: bool) -> Tensor:
        log_w = self._log_weights(energy_fn, training)
        return torch.logsumexp(log_w, dim=0) - math.log(log_w.numel())

    @torch.no_grad()
    def estimate(self, energy_fn: Callable[[Tensor], Tensor]) -> LogZEstimate:
        """The evaluation estimate and its standard error, se(log Z) = se(mean w) / mean w."""
        return snis_estimate(self._log_weights(energy_fn, training=False))

    def _log_weights(self, energy_fn: Callable[[Tensor], Tensor], training: bool) -> Tensor:
        if training and self.update_proposal and isinstance(self.proposal, FlowProposal):
            self.proposal.update(energy_fn, self.train_samples, self._generator(training))
        samples = self.train_samples if training else self.eval_samples
        y, log_q = self.proposal.sample(samples, self._generator(training))
        log_w = -energy_fn(y) - log_q
        if not bool(torch.isfinite(log_w).all()):
            raise NonFiniteWeights(
                "importance weights are not finite (the energy or the proposal density "
                "overflowed); try a wider proposal (log_z.widen) or a smaller lr"
            )
        return log_w

    def _generator(self, training: bool) -> torch.Generator:
        if training:
            if self._train_stream is None:
                self._train_stream = host_generator(self._seed)
            return self._train_stream
        # the same draws at every evaluation, so log_prob is one fixed function between calls
        return host_generator(self._seed + 1_000_003)
