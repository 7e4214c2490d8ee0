"""2-D toy data sets for flow pictures (not log-concave): eight gaussians, moons, circles,
checkerboard. Only the Gaussian mixture has a closed-form density."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from icnn_bench.targets.base import Target, TargetError, seeded_sample


def _noise(name: str, noise: float) -> float:
    if not (isinstance(noise, int | float) and math.isfinite(noise) and noise >= 0):
        raise TargetError(f"target {name}: noise={noise!r} must be a finite number >= 0")
    return float(noise)


class EightGaussians(Target):
    """Equal mixture of 8 isotropic Gaussians on a circle of radius `radius`."""

    name = "eight_gaussians"
    dim = 2

    def __init__(self, radius: float = 2.0, noise: float = 0.2) -> None:
        self.noise = _noise(self.name, noise)
        if self.noise == 0:
            raise TargetError("target eight_gaussians: noise must be > 0 (it is the std)")
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        self.centres = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
        self.radius = float(radius)

    def sample(self, n: int, seed: int) -> Tensor:
        def draw() -> Tensor:
            which = torch.randint(8, (n,))
            return self.centres[which] + self.noise * torch.randn(n, 2, dtype=torch.float64)

        return seeded_sample(draw, seed).float()

    def log_prob(self, x: Tensor) -> Tensor:
        diff = x.double()[:, None, :] - self.centres[None]
        log_comp = -0.5 * (diff**2).sum(-1) / self.noise**2 - math.log(2 * math.pi * self.noise**2)
        return (torch.logsumexp(log_comp, dim=1) - math.log(8)).to(x.dtype)

    def box(self) -> list[tuple[float, float]]:
        edge = self.radius + 8 * self.noise
        return [(-edge, edge)] * 2


class _SklearnToy(Target):
    dim = 2

    def __init__(self, noise: float) -> None:
        self.noise = _noise(self.name, noise)

    def _draw(self, n: int, seed: int) -> np.ndarray:
        raise NotImplementedError

    def sample(self, n: int, seed: int) -> Tensor:
        return torch.as_tensor(self._draw(n, seed), dtype=torch.float32)

    def box(self) -> list[tuple[float, float]]:
        return [(-4.0, 4.0)] * 2


class Moons(_SklearnToy):
    name = "moons"

    def __init__(self, noise: float = 0.05) -> None:
        super().__init__(noise)

    def _draw(self, n: int, seed: int) -> np.ndarray:
        from sklearn.datasets import make_moons

        x, _ = make_moons(n, noise=self.noise, random_state=seed)
        return (x - [0.5, 0.25]) * 2  # centred, unit-ish scale


class Circles(_SklearnToy):
    name = "circles"

    def __init__(self, noise: float = 0.05) -> None:
        super().__init__(noise)

    def _draw(self, n: int, seed: int) -> np.ndarray:
        from sklearn.datasets import make_circles

        x, _ = make_circles(n, noise=self.noise, factor=0.5, random_state=seed)
        return x * 2


class Checkerboard(_SklearnToy):
    """Uniform on the dark squares of a 4x4 board on [-2, 2]^2 (density 1/8 there)."""

    name = "checkerboard"

    def __init__(self) -> None:
        super().__init__(0.0)

    def _draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x1 = rng.uniform(-2, 2, n)
        x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2.0
        x2 = x2 + (np.floor(x1) % 2)
        return np.stack([x1, x2], axis=1)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = (x.abs() <= 2).all(-1)
        dark = ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2) == 0
        log_density = torch.full_like(x[:, 0], -math.log(8.0))
        return torch.where(inside & dark, log_density, torch.full_like(log_density, -math.inf))
