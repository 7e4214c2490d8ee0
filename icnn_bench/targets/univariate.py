"""1-D log-concave targets with exact log-density, entropy and a quadrature box."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributions as D
from torch import Tensor

from icnn_bench.targets.base import Target, TargetError, seeded_sample


class Univariate(Target):
    """A 1-D torch distribution restricted to a box that holds all but ~1e-7 of its mass."""

    dim = 1

    def __init__(
        self,
        name: str,
        dist: D.Distribution,
        box: tuple[float, float],
        entropy: float | None = None,
        window: tuple[float, float] | None = None,
    ) -> None:
        self.name = name
        self._dist = dist
        self._box = (float(box[0]), float(box[1]))
        self._entropy = entropy
        self._window = None if window is None else (float(window[0]), float(window[1]))

    def sample(self, n: int, seed: int) -> Tensor:
        draw = seeded_sample(lambda: self._dist.sample((n,)), seed)
        return draw.reshape(n, 1).float()

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.reshape(-1)
        lo, hi = self._support()
        inside = (x >= lo) & (x <= hi)
        safe = torch.where(inside, x, torch.full_like(x, self._safe_point()))
        lp = self._dist.log_prob(safe).to(x.dtype)
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))

    def entropy(self) -> float:
        if self._entropy is None:
            self._entropy = _entropy_by_quadrature(self)
        return self._entropy

    def box(self) -> list[tuple[float, float]]:
        return [self._box]

    def authors_window(self) -> tuple[float, float] | None:
        return self._window

    def _support(self) -> tuple[float, float]:
        support = self._dist.support
        return (
            float(getattr(support, "lower_bound", -math.inf)),
            float(getattr(support, "upper_bound", math.inf)),
        )

    def _safe_point(self) -> float:
        lo, hi = self._box
        return 0.5 * (lo + hi)


class SkewNormal(D.Distribution):
    """Azzalini's skew-normal: density 2/scale * phi(z) * Phi(shape * z), z = (x - loc)/scale."""

    arg_constraints = {}  # noqa: RUF012 (checked in the factory)
    support = D.constraints.real

    def __init__(self, loc: float, scale: float, shape: float) -> None:
        self.loc, self.scale, self.shape_param = float(loc), float(scale), float(shape)
        super().__init__(batch_shape=torch.Size(), validate_args=False)

    @property
    def mean(self) -> Tensor:
        delta = self.shape_param / math.sqrt(1 + self.shape_param**2)
        return torch.tensor(self.loc + self.scale * delta * math.sqrt(2 / math.pi))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        delta = self.shape_param / math.sqrt(1 + self.shape_param**2)
        u0 = torch.randn(sample_shape)
        v = torch.randn(sample_shape)
        u1 = delta * u0 + math.sqrt(1 - delta**2) * v
        return self.loc + self.scale * torch.where(u0 >= 0, u1, -u1)

    def log_prob(self, value: Tensor) -> Tensor:
        z = (value - self.loc) / self.scale
        log_phi = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
        log_cdf = torch.special.log_ndtr(self.shape_param * z)
        return math.log(2.0) - math.log(self.scale) + log_phi + log_cdf


def _entropy_by_quadrature(target: Univariate, nodes: int = 400_000) -> float:
    lo, hi = target.box()[0]
    h = (hi - lo) / nodes
    x = lo + h * (torch.arange(nodes, dtype=torch.float64) + 0.5)
    lp = target.log_prob(x)
    p = lp.exp()
    return float(-(torch.where(p > 0, p * lp, torch.zeros_like(p))).sum() * h)


def _positive(name: str, **values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise TargetError(f"target {name}: {key}={value!r} must be a positive finite number")


def _finite(name: str, **values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value)):
            raise TargetError(f"target {name}: {key}={value!r} must be a finite number")


def _location_scale(
    name: str,
    family: type[D.Distribution],
    loc: float,
    scale: float,
    box: tuple[float, float],
    window: tuple[float, float],
) -> Univariate:
    """A location-scale family; `box` and `window` are given for the standard member."""
    _finite(name, loc=loc)
    _positive(name, scale=scale)
    dist = family(torch.tensor(float(loc)), torch.tensor(float(scale)))
    lo, hi = box
    return Univariate(
        name,
        dist,
        (loc + lo * scale, loc + hi * scale),
        float(dist.entropy()),
        window=(loc + window[0] * scale, loc + window[1] * scale),
    )


def gumbel(loc: float = 0.0, scale: float = 1.0) -> Univariate:
    return _location_scale("gumbel", D.Gumbel, loc, scale, (-3.5, 17.0), (-5.0, 12.0))


def laplace(loc: float = 0.0, scale: float = 1.0) -> Univariate:
    return _location_scale("laplace", D.Laplace, loc, scale, (-16.0, 16.0), (-8.0, 8.0))


def gamma(concentration: float = 2.0, rate: float = 1.0) -> Univariate:
    _positive("gamma", concentration=concentration, rate=rate)
    if concentration < 1:
        raise TargetError(
            f"target gamma: concentration={concentration} < 1 is not log-concave; use >= 1"
        )
    dist = D.Gamma(torch.tensor(float(concentration)), torch.tensor(float(rate)))
    hi = (concentration + 8 * math.sqrt(concentration) + 8) / rate
    window = (0.0, (concentration + 8 * math.sqrt(concentration)) / rate)  # mean + 8 std
    return Univariate("gamma", dist, (0.0, hi), float(dist.entropy()), window)


def beta(a: float = 2.0, b: float = 5.0) -> Univariate:
    _positive("beta", a=a, b=b)
    if a < 1 or b < 1:
        raise TargetError(f"target beta: a={a}, b={b}; both must be >= 1 to be log-concave")
    dist = D.Beta(torch.tensor(float(a)), torch.tensor(float(b)))
    return Univariate("beta", dist, (0.0, 1.0), float(dist.entropy()), (0.0, 1.0))


def halfnormal(scale: float = 1.0) -> Univariate:
    _positive("halfnormal", scale=scale)
    dist = D.HalfNormal(torch.tensor(float(scale)))
    box = (0.0, 6 * scale)
    return Univariate("halfnormal", dist, box, float(dist.entropy()), box)


def skewnormal(loc: float = 0.0, scale: float = 1.0, shape: float = 4.0) -> Univariate:
    _finite("skewnormal", loc=loc, shape=shape)
    _positive("skewnormal", scale=scale)
    dist = SkewNormal(loc, scale, shape)
    window = (loc - 5 * scale, loc + (5 + 0.6 * shape) * scale)
    return Univariate("skewnormal", dist, (loc - 6 * scale, loc + 6 * scale), window=window)


def gaussian(loc: float = 0.0, scale: float = 1.0) -> Univariate:
    # not in the authors' code: the window of their asymmetric Gaussian toy, (-5, 5)
    return _location_scale("gaussian", D.Normal, loc, scale, (-7.0, 7.0), (-5.0, 5.0))


def logistic(loc: float = 0.0, scale: float = 1.0) -> Univariate:
    _finite("logistic", loc=loc)
    _positive("logistic", scale=scale)
    base = D.Uniform(torch.tensor(0.0), torch.tensor(1.0))
    transforms = [D.SigmoidTransform().inv, D.AffineTransform(float(loc), float(scale))]
    dist = D.TransformedDistribution(base, transforms, validate_args=False)
    box = (loc - 17 * scale, loc + 17 * scale)
    window = (loc - 8 * scale, loc + 8 * scale)  # not in the authors' code: as their laplace
    return Univariate("logistic", dist, box, math.log(scale) + 2.0, window)


UNIVARIATE: dict[str, Callable[..., Univariate]] = {
    "gumbel": gumbel,
    "laplace": laplace,
    "gamma": gamma,
    "beta": beta,
    "halfnormal": halfnormal,
    "skewnormal": skewnormal,
    "gaussian": gaussian,
    "logistic": logistic,
}
