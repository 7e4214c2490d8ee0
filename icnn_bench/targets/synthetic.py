"""d-D log-concave targets with exact log-density and entropy in any dimension."""

from __future__ import annotations

import itertools
import math

import torch
import torch.distributions as D
from torch import Tensor

from icnn_bench.targets.base import Target, TargetError, seeded_sample
from icnn_bench.targets.univariate import UNIVARIATE, Univariate, gamma, gaussian


def _check_dim(name: str, dim: int) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise TargetError(f"target {name}: dim={dim!r} must be a positive integer")


class CorrelatedGaussian(Target):
    """N(0, S) with S_ij = rho^|i-j| (an AR(1) correlation); exact density and entropy."""

    name = "correlated_gaussian"

    def __init__(self, dim: int = 4, rho: float = 0.6) -> None:
        _check_dim(self.name, dim)
        if not (isinstance(rho, int | float) and -1 < rho < 1):
            raise TargetError(f"target {self.name}: rho={rho!r} must lie strictly in (-1, 1)")
        self.dim = dim
        index = torch.arange(dim, dtype=torch.float64)
        cov = float(rho) ** (index[:, None] - index[None, :]).abs()
        self._dist = D.MultivariateNormal(torch.zeros(dim, dtype=torch.float64), cov)

    def sample(self, n: int, seed: int) -> Tensor:
        return seeded_sample(lambda: self._dist.sample((n,)), seed).float()

    def log_prob(self, x: Tensor) -> Tensor:
        return self._dist.log_prob(x.double()).to(x.dtype)

    def entropy(self) -> float:
        return float(self._dist.entropy())

    def box(self) -> list[tuple[float, float]]:
        return [(-7.0, 7.0)] * self.dim


class RotatedProduct(Target):
    """x = R u with independent 1-D log-concave factors u_i and a seeded random rotation R.

    A rotation keeps volume, so log p(x) = sum_i log p_i((R^T x)_i) and H = sum_i H_i.
    """

    name = "rotated_product"

    def __init__(
        self,
        dim: int = 4,
        factors: tuple[str, ...] | list[str] = ("gumbel", "laplace", "gamma"),
        rotation_seed: int = 0,
    ) -> None:
        _check_dim(self.name, dim)
        unknown = [f for f in factors if f not in UNIVARIATE]
        if not factors or unknown:
            raise TargetError(
                f"target {self.name}: factors={list(factors)!r}; each must be one of: "
                f"{', '.join(sorted(UNIVARIATE))}"
            )
        self.dim = dim
        self.factors: list[Univariate] = [
            UNIVARIATE[name]() for name in itertools.islice(itertools.cycle(factors), dim)
        ]
        generator = torch.Generator().manual_seed(rotation_seed)
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        self.rotation = q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal matrix

    def sample(self, n: int, seed: int) -> Tensor:
        u = torch.cat(
            [f.sample(n, seed * 1009 + i).double() for i, f in enumerate(self.factors)], dim=1
        )
        return (u @ self.rotation.T).float()

    def log_prob(self, x: Tensor) -> Tensor:
        u = x.double() @ self.rotation
        total = sum(f.log_prob(u[:, i]) for i, f in enumerate(self.factors))
        return total.to(x.dtype)

    def entropy(self) -> float:
        return sum(f.entropy() for f in self.factors)

    def box(self) -> list[tuple[float, float]]:
        """The bounding box of the rotated product of the factors' boxes."""
        corners = torch.tensor(
            list(itertools.product(*[f.box()[0] for f in self.factors])), dtype=torch.float64
        )
        rotated = corners @ self.rotation.T
        return [
            (float(lo), float(hi))
            for lo, hi in zip(rotated.min(0).values, rotated.max(0).values, strict=True)
        ]


class GammaTimesGaussian(Target):
    """The paper authors' 2-D EBM target: x ~ Gamma(concentration, rate) + shift, independent
    of y ~ N(0, sigma_y^2); log-concave for concentration >= 1, exact density and entropy."""

    name = "gamma_gaussian_2d"
    dim = 2

    def __init__(
        self,
        concentration: float = 2.0,
        rate: float = 1.0,
        shift: float = -3.0,
        sigma_y: float = 0.5,
    ) -> None:
        if not (isinstance(shift, int | float) and math.isfinite(shift)):
            raise TargetError(f"target {self.name}: shift={shift!r} must be a finite number")
        self.shift = float(shift)
        self.x_factor = gamma(concentration, rate)
        self.y_factor = gaussian(0.0, sigma_y)

    def sample(self, n: int, seed: int) -> Tensor:
        x = self.x_factor.sample(n, seed * 1009) + self.shift
        return torch.cat([x, self.y_factor.sample(n, seed * 1009 + 1)], dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.x_factor.log_prob(x[:, 0] - self.shift) + self.y_factor.log_prob(x[:, 1])

    def entropy(self) -> float:
        return self.x_factor.entropy() + self.y_factor.entropy()

    def box(self) -> list[tuple[float, float]]:
        (x_lo, x_hi), y_box = self.x_factor.box()[0], self.y_factor.box()[0]
        return [(x_lo + self.shift, x_hi + self.shift), y_box]


def correlated_gaussian(dim: int = 4, rho: float = 0.6) -> CorrelatedGaussian:
    return CorrelatedGaussian(dim, rho)


def rotated_product(
    dim: int = 4, factors: list[str] | None = None, rotation_seed: int = 0
) -> RotatedProduct:
    return RotatedProduct(dim, tuple(factors or ("gumbel", "laplace", "gamma")), rotation_seed)
