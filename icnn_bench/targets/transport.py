"""Pairs (P, Q) whose optimal transport map for the quadratic cost is known exactly.

A pair's rows (`sample`, `split`) are P's draws; Q is the push-forward of P by the map
T* = grad psi with psi convex, so by Brenier's theorem T* is the OT map from P to Q:

- `gaussian_pair`: P = N(0, S1), Q = N(m, S2); T*(x) = m + A x with
  A = S1^-1/2 (S1^1/2 S2 S1^1/2)^1/2 S1^-1/2, and
  W2^2 = |m|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
- `mixture_pair` (after Korotin et al., NeurIPS 2021, a different construction): P a mixture of
  three Gaussians, T* the gradient of a fixed convex
  psi(x) = x'Sx/2 + tau * logsumexp(Bx + c) + sum_j g_j softplus(u_j'x + b_j); W2^2 and Var(Q)
  by Monte Carlo on 2^17 draws (estimates, with their standard error).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from icnn_bench import checks
from icnn_bench.targets.base import Target, seeded_sample

MC_DRAWS = 2**17  # draws behind a pair's Monte Carlo constants


class TransportPair(Target):
    """A Target whose rows are P's; adds Q's draws, the true map and the constants of the
    metrics (Var(Q) = tr Cov(Q), and W2^2(P, Q))."""

    is_transport = True

    def __init__(self, dim: int, pair_seed: int) -> None:
        checks.integer("target.params.dim", dim, maximum=4096)
        checks.integer("target.params.pair_seed", pair_seed, minimum=0)
        self.dim = dim
        self.pair_seed = pair_seed

    def log_prob(self, x: Tensor) -> Tensor | None:
        return None

    def sample(self, n: int, seed: int) -> Tensor:
        return seeded_sample(lambda: self._draw_p(n), seed)

    def sample_q(self, n: int, generator: torch.Generator) -> Tensor:
        """n draws of Q: P's draws pushed through the true map."""
        with torch.no_grad():
            return self.true_map(self._draw_p(n, generator))

    def true_map(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _draw_p(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def constants(self) -> dict[str, float]:
        """var_q (tr Cov Q), w2_squared and their standard errors (0 where exact)."""
        raise NotImplementedError

    def _monte_carlo(self) -> dict[str, float]:
        generator = torch.Generator().manual_seed(10_007 + self.pair_seed)
        x = self._draw_p(MC_DRAWS, generator).double()
        y = self.true_map(x.float()).double()
        cost = ((y - x) ** 2).sum(-1)
        centred = ((y - y.mean(0)) ** 2).sum(-1)
        n = float(MC_DRAWS)
        return {
            "var_q": float(centred.sum() / (n - 1)),
            "var_q_se": float(centred.std() / math.sqrt(n)),
            "w2_squared": float(cost.mean()),
            "w2_squared_se": float(cost.std() / math.sqrt(n)),
        }


def _spd(dim: int, generator: torch.Generator, low: float, high: float) -> Tensor:
    """A random symmetric matrix with eigenvalues spread log-uniformly over [low, high]."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    u = torch.rand(dim, generator=generator, dtype=torch.float64)
    eig = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return (q * eig) @ q.T


def _sqrtm(matrix: Tensor) -> Tensor:
    eig, vec = torch.linalg.eigh(matrix)
    return (vec * eig.clamp(min=0).sqrt()) @ vec.T


class GaussianPair(TransportPair):
    name = "gaussian_pair"

    def __init__(self, dim: int = 2, pair_seed: int = 0) -> None:
        super().__init__(dim, pair_seed)
        generator = torch.Generator().manual_seed(1_000 + pair_seed)
        self.cov_p = _spd(dim, generator, 0.5, 2.0)
        self.cov_q = _spd(dim, generator, 0.5, 2.0)
        self.mean_q = torch.randn(dim, generator=generator, dtype=torch.float64)
        root_p = _sqrtm(self.cov_p)
        inv_root_p = torch.linalg.inv(root_p)
        self._cross = _sqrtm(root_p @ self.cov_q @ root_p)
        self.map_matrix = inv_root_p @ self._cross @ inv_root_p  # symmetric positive-definite
        self._chol_p = torch.linalg.cholesky(self.cov_p).float()
        self._matrix, self._mean = self.map_matrix.float(), self.mean_q.float()

    def _draw_p(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.dim, generator=generator) @ self._chol_p.T

    def true_map(self, x: Tensor) -> Tensor:
        return self._mean.to(x) + x @ self._matrix.to(x).T

    def constants(self) -> dict[str, float]:
        trace = torch.trace(self.cov_p + self.cov_q - 2 * self._cross)
        return {
            "var_q": float(torch.trace(self.cov_q)),
            "var_q_se": 0.0,
            "w2_squared": float((self.mean_q**2).sum() + trace),
            "w2_squared_se": 0.0,
        }


class MixturePair(TransportPair):
    name = "mixture_pair"

    def __init__(
        self, dim: int = 2, pair_seed: int = 0, components: int = 3, pieces: int = 8
    ) -> None:
        super().__init__(dim, pair_seed)
        checks.integer("target.params.components", components)
        checks.integer("target.params.pieces", pieces)
        generator = torch.Generator().manual_seed(2_000 + pair_seed)
        # P: `components` Gaussians with random centres at distance ~2 and scales 0.3-0.6
        direction = torch.randn(components, dim, generator=generator)
        self.centres = 2.0 * direction / direction.norm(dim=1, keepdim=True)
        self.scales = 0.3 + 0.3 * torch.rand(components, generator=generator)
        # psi: a quadratic, a smoothed max of `pieces` affine functions, `pieces` ridges
        self.quadratic = _spd(dim, generator, 0.3, 1.0).float()
        self.tau = 1.0
        self.slopes = 1.5 * torch.randn(pieces, dim, generator=generator) / math.sqrt(dim)
        self.offsets = torch.randn(pieces, generator=generator)
        self.ridges = torch.randn(pieces, dim, generator=generator) / math.sqrt(dim)
        self.ridge_offsets = torch.randn(pieces, generator=generator)
        self.ridge_weights = 0.5 + torch.rand(pieces, generator=generator)
        self._constants: dict[str, float] | None = None

    def _draw_p(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = torch.randint(len(self.scales), (n,), generator=generator)
        noise = torch.randn(n, self.dim, generator=generator)
        return self.centres[which] + self.scales[which, None] * noise

    def potential(self, x: Tensor) -> Tensor:
        """psi(x), convex: its gradient is the true map."""
        p = {k: v.to(x) for k, v in self._parts().items()}
        quadratic = 0.5 * ((x @ p["quadratic"]) * x).sum(-1)
        smooth_max = self.tau * torch.logsumexp(x @ p["slopes"].T + p["offsets"], dim=-1)
        ridges = (F.softplus(x @ p["ridges"].T + p["ridge_offsets"]) * p["ridge_weights"]).sum(-1)
        return quadratic + smooth_max + ridges

    def true_map(self, x: Tensor) -> Tensor:
        p = {k: v.to(x) for k, v in self._parts().items()}
        weights = torch.softmax(x @ p["slopes"].T + p["offsets"], dim=-1)
        ridge = torch.sigmoid(x @ p["ridges"].T + p["ridge_offsets"]) * p["ridge_weights"]
        return x @ p["quadratic"] + self.tau * weights @ p["slopes"] + ridge @ p["ridges"]

    def _parts(self) -> dict[str, Tensor]:
        return {
            "quadratic": self.quadratic,
            "slopes": self.slopes,
            "offsets": self.offsets,
            "ridges": self.ridges,
            "ridge_offsets": self.ridge_offsets,
            "ridge_weights": self.ridge_weights,
        }

    def constants(self) -> dict[str, float]:
        if self._constants is None:
            self._constants = self._monte_carlo()
        return self._constants
