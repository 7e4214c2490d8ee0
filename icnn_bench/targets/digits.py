"""Image-flavoured latents: scikit-learn's bundled 8x8 digits (no download), PCA-encoded."""

from __future__ import annotations

import numpy as np
from torch import nn

from icnn_bench.targets.image_latents import Autoencoder, ImageLatents


class DigitsLatents(ImageLatents):
    """The 1797 digits (pixel values 0-16), encoded to `latent_dim` by a PCA (or a small MLP
    autoencoder, 64-128-d-128-64) fitted on the training rows only."""

    name = "digits_latents"
    side = 8
    pixel_max = 16.0

    def __init__(self, latent_dim: int = 4, encoder: str = "pca", ae_steps: int = 3000) -> None:
        from sklearn.datasets import load_digits

        pixels = load_digits().data.astype(np.float64)  # ships with scikit-learn
        super().__init__(pixels, latent_dim, encoder, ae_steps)

    def autoencoder(self) -> Autoencoder:
        pixels = self.side * self.side
        return Autoencoder(
            nn.Sequential(nn.Linear(pixels, 128), nn.ELU(), nn.Linear(128, self.dim)),
            nn.Sequential(nn.Linear(self.dim, 128), nn.ELU(), nn.Linear(128, pixels)),
        )


def digits_latents(
    latent_dim: int = 4, encoder: str = "pca", ae_steps: int = 3000
) -> DigitsLatents:
    return DigitsLatents(latent_dim, encoder, ae_steps)
