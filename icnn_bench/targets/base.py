"""What every data source offers: samples, and where known the exact density and entropy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from icnn_bench import checks
from icnn_bench.devices import isolated_global_rng
from icnn_bench.errors import ConfigError


class TargetError(ConfigError):
    """A target was asked for with parameters it cannot have."""


@dataclass(frozen=True)
class Split:
    train: Tensor
    val: Tensor
    test: Tensor


class Target(ABC):
    """A distribution to fit. Samples are rows of shape (n, dim).

    Optional capabilities, declared: `can_sample` (fresh draws: False for a fixed data set),
    `can_decode` (latents that map back to data, `decode`), `use_cache_dir` (a folder shared
    by a sweep's runs for what is costly to fit, such as an encoder)."""

    name: str
    dim: int
    can_sample: bool = True
    can_decode: bool = False

    @abstractmethod
    def sample(self, n: int, seed: int) -> Tensor:
        """n samples drawn from a stream fixed by seed (the global RNG is left untouched)."""

    def log_prob(self, x: Tensor) -> Tensor | None:
        """Exact log-density, or None when the truth is unknown."""
        return None

    def entropy(self) -> float | None:
        return None

    def decode(self, x: Tensor):
        """Latents -> data (e.g. 8x8 images) where `can_decode`."""
        raise NotImplementedError(f"target {self.name} has nothing to decode to")

    def check_available(self) -> None:  # noqa: B027 (optional capability)
        """Raise a DataError if the data cannot be read (e.g. files the user must supply)."""

    def use_cache_dir(self, folder) -> None:  # noqa: B027 (optional capability)
        """Where to keep what is costly to fit (default: nothing to keep)."""

    def authors_window(self) -> tuple[float, float] | None:
        """1-D: the paper authors' plotting window, on which their code measures TV."""
        return None

    def box(self) -> list[tuple[float, float]] | None:
        """Per-axis interval holding all but a negligible share of the mass (for quadrature)."""
        return None

    def split(self, seed: int, n_train: int, n_val: int, n_test: int) -> Split:
        """Seeded train/val/test samples; the same seed gives every method the same data."""
        for key, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            checks.integer(f"data.{key}", n)
        data = self.sample(n_train + n_val + n_test, seed)
        return Split(
            train=data[:n_train],
            val=data[n_train : n_train + n_val],
            test=data[n_train + n_val :],
        )


def seeded_sample(draw, seed: int) -> Tensor:
    """Run draw() on the global RNG seeded to `seed`, restoring the RNG state afterwards."""
    with isolated_global_rng():
        # the CPU stream only (what draw() uses), the same state torch.manual_seed sets; it
        # also walks every other backend, 1.4 ms a call, which a fresh batch per step pays
        torch.default_generator.manual_seed(seed)
        return draw()
