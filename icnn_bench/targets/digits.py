"""Image-flavoured latents: scikit-learn's bundled 8x8 digits (no download), PCA-encoded."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from icnn_bench.targets.base import Split, Target, TargetError

PIXELS = 64
FRACTIONS = (0.7, 0.15, 0.15)  # train / val / test when no sizes are given


class DigitsLatents(Target):
    """The 1797 digits, encoded to `latent_dim` by a PCA fitted on the training rows only,
    then standardised with training statistics. The truth is unknown: no log_prob."""

    name = "digits_latents"

    def __init__(self, latent_dim: int = 4, encoder: str = "pca") -> None:
        if encoder != "pca":
            raise TargetError(f"target digits_latents: encoder={encoder!r}; choose one of: pca")
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise TargetError(f"target digits_latents: latent_dim={latent_dim!r} must be >= 1")
        if latent_dim > PIXELS:
            raise TargetError(
                f"target digits_latents: latent_dim={latent_dim} exceeds the {PIXELS} pixels "
                "of an 8x8 digit; choose 1..64"
            )
        from sklearn.datasets import load_digits

        self.dim = latent_dim
        self.pixels = load_digits().data.astype(np.float64)  # ships with scikit-learn
        self._pca = None
        self._mean = self._std = None

    def sample(self, n: int, seed: int) -> Tensor:
        raise TargetError("digits_latents is a fixed data set; it cannot draw new samples")

    def box(self) -> list[tuple[float, float]]:
        return [(-7.0, 7.0)] * self.dim  # standardised latents (quadrature only for d <= 2)

    def split(self, seed: int, n_train: int | None, n_val: int | None, n_test: int | None) -> Split:
        """Seeded permutation of the rows; PCA and standardisation fitted on the train rows."""
        total = len(self.pixels)
        sizes = (n_train, n_val, n_test)
        if any(n is None for n in sizes):
            n_train, n_val = (round(f * total) for f in FRACTIONS[:2])
            n_test = total - n_train - n_val
        elif any(not isinstance(n, int) or n <= 0 for n in sizes) or sum(sizes) > total:
            raise TargetError(
                f"target digits_latents has {total} rows; data.n_train/n_val/n_test={sizes} "
                "must be positive and fit (set them to null for a 70/15/15 split)"
            )
        from sklearn.decomposition import PCA

        order = np.random.default_rng(seed).permutation(total)
        rows = self.pixels[order]
        parts = [
            rows[:n_train],
            rows[n_train : n_train + n_val],
            rows[n_train + n_val : n_train + n_val + n_test],
        ]
        if self.dim > min(n_train, PIXELS):
            raise TargetError(
                f"target digits_latents: latent_dim={self.dim} exceeds what {n_train} "
                "training rows allow"
            )
        self._pca = PCA(n_components=self.dim, random_state=seed).fit(parts[0])
        latents = [self._pca.transform(part) for part in parts]
        self._mean, std = latents[0].mean(0), latents[0].std(0)
        self._std = np.where(std > 1e-8, std, 1.0)  # a few pixels never vary: no direction
        train, val, test = (
            torch.as_tensor((z - self._mean) / self._std, dtype=torch.float32) for z in latents
        )
        return Split(train, val, test)

    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents (n, dim) back to 8x8 images with pixel values in [0, 16]."""
        if self._pca is None:
            raise RuntimeError("decode needs the encoder: call split() first")
        z = latents.detach().cpu().double().numpy() * self._std + self._mean
        return np.clip(self._pca.inverse_transform(z), 0, 16).reshape(-1, 8, 8)


def digits_latents(latent_dim: int = 4, encoder: str = "pca") -> DigitsLatents:
    return DigitsLatents(latent_dim, encoder)
