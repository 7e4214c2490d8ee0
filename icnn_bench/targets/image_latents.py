"""Images encoded to a few latent dimensions: what the latent targets (digits, MNIST) share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from icnn_bench import io
from icnn_bench.devices import isolated_global_rng
from icnn_bench.targets.base import Split, Target, TargetError

FRACTIONS = (0.7, 0.15, 0.15)  # train / val / test when no sizes are given
ENCODERS = ("pca", "autoencoder")


class ImageLatents(Target):
    """A fixed set of side x side images (rows of `pixels`, values in [0, pixel_max]), encoded
    to `latent_dim` by an encoder fitted on the training rows only, then standardised with
    training statistics. The truth is unknown: no log_prob. Subclasses give the images and
    their autoencoder."""

    can_sample = False  # a fixed data set
    can_decode = True
    side: int
    pixel_max: float

    def __init__(self, pixels: np.ndarray, latent_dim: int, encoder: str, ae_steps: int) -> None:
        n_pixels = self.side * self.side
        if encoder not in ENCODERS:
            raise TargetError(
                f"target {self.name}: encoder={encoder!r}; choose one of: {', '.join(ENCODERS)}"
            )
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise TargetError(f"target {self.name}: latent_dim={latent_dim!r} must be >= 1")
        if latent_dim > n_pixels:
            raise TargetError(
                f"target {self.name}: latent_dim={latent_dim} exceeds the {n_pixels} pixels "
                f"of a {self.side}x{self.side} image; choose 1..{n_pixels}"
            )
        self.dim = latent_dim
        self.encoder = encoder
        self.ae_steps = ae_steps
        self.pixels = pixels
        self._codec: PCACodec | Autoencoder | None = None
        self._mean = self._std = None
        self._cache_dir: Path | None = None

    def autoencoder(self) -> Autoencoder:
        """An untrained autoencoder for these images (built under the caller's seed)."""
        raise NotImplementedError

    def use_cache_dir(self, folder: Path) -> None:
        """Where a trained autoencoder is kept, so each (latent_dim, seed) is trained once."""
        self._cache_dir = Path(folder)

    def sample(self, n: int, seed: int) -> Tensor:
        raise TargetError(f"{self.name} is a fixed data set; it cannot draw new samples")

    def box(self) -> list[tuple[float, float]]:
        return [(-7.0, 7.0)] * self.dim  # standardised latents (quadrature only for d <= 2)

    def split(self, seed: int, n_train: int | None, n_val: int | None, n_test: int | None) -> Split:
        """Seeded permutation of the rows; the encoder and standardisation fitted on the
        train rows."""
        total = len(self.pixels)
        sizes = (n_train, n_val, n_test)
        if any(n is None for n in sizes):
            n_train, n_val = (round(f * total) for f in FRACTIONS[:2])
            n_test = total - n_train - n_val
        elif any(not isinstance(n, int) or n <= 0 for n in sizes) or sum(sizes) > total:
            raise TargetError(
                f"target {self.name} has {total} rows; data.n_train/n_val/n_test={sizes} "
                "must be positive and fit (set them to null for a 70/15/15 split)"
            )
        order = np.random.default_rng(seed).permutation(total)
        rows = self.pixels[order]
        parts = [
            rows[:n_train],
            rows[n_train : n_train + n_val],
            rows[n_train + n_val : n_train + n_val + n_test],
        ]
        if self.dim > min(n_train, self.side * self.side):
            raise TargetError(
                f"target {self.name}: latent_dim={self.dim} exceeds what {n_train} "
                "training rows allow"
            )
        if self.encoder == "pca":
            self._codec = PCACodec(self.dim, seed, parts[0])
        else:
            self._codec = Autoencoder.fit_or_load(
                self.autoencoder, parts[0], self.pixel_max, seed, self.ae_steps,
                self._cache_file(seed),
            )  # fmt: skip
        latents = [self._codec.encode(part) for part in parts]
        self._mean, std = latents[0].mean(0), latents[0].std(0)
        self._std = np.where(std > 1e-8, std, 1.0)  # a few pixels never vary: no direction
        train, val, test = (
            torch.as_tensor((z - self._mean) / self._std, dtype=torch.float32) for z in latents
        )
        return Split(train, val, test)

    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents (n, dim) back to side x side images with pixel values in [0, pixel_max]."""
        if self._codec is None:
            raise RuntimeError("decode needs the encoder: call split() first")
        z = latents.detach().cpu().double().numpy() * self._std + self._mean
        images = np.clip(self._codec.decode(z), 0, self.pixel_max)
        return images.reshape(-1, self.side, self.side)

    def _cache_file(self, seed: int) -> Path | None:
        if self._cache_dir is None:
            return None
        name = f"{self.name}_autoencoder_d{self.dim}_seed{seed}_steps{self.ae_steps}.pt"
        return self._cache_dir / name


class PCACodec:
    """PCA on the pixel values as they are."""

    def __init__(self, dim: int, seed: int, train_pixels: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        self.pca = PCA(n_components=dim, random_state=seed).fit(train_pixels)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.pca.transform(pixels)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        return self.pca.inverse_transform(latents)


class Autoencoder(nn.Module):
    """An encoder and decoder between flat pixel rows scaled to [0, 1] and latents, trained by
    mean squared reconstruction error (Adam, batch 128) on the training rows."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.scale = 1.0  # pixel values / scale lie in [0, 1]

    @classmethod
    def fit_or_load(
        cls,
        build: Callable[[], Autoencoder],
        train_pixels: np.ndarray,
        scale: float,
        seed: int,
        steps: int,
        cache: Path | None,
    ) -> Autoencoder:
        with isolated_global_rng():
            torch.manual_seed(seed)
            codec = build()
            codec.scale = float(scale)
            if cache is not None and cache.exists():
                codec.load_state_dict(torch.load(cache, weights_only=True))
                return codec.eval()
            codec._fit(torch.as_tensor(train_pixels / scale, dtype=torch.float32), steps)
        if cache is not None:
            io.save_torch(cache, codec.state_dict())
        return codec.eval()

    def _fit(self, x: Tensor, steps: int) -> None:
        optimizer = torch.optim.Adam(self.parameters(), lr=2e-3)
        for _ in range(steps):
            batch = x[torch.randint(len(x), (128,))]
            loss = ((self.decoder(self.encoder(batch)) - batch) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(pixels / self.scale, dtype=torch.float32)
        return self.encoder(x).double().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(latents, dtype=torch.float32)
        return self.decoder(z).double().numpy() * self.scale
