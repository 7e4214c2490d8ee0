"""Image-flavoured latents: scikit-learn's bundled 8x8 digits (no download), PCA-encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from icnn_bench import io
from icnn_bench.devices import isolated_global_rng
from icnn_bench.targets.base import Split, Target, TargetError

PIXELS = 64
FRACTIONS = (0.7, 0.15, 0.15)  # train / val / test when no sizes are given
ENCODERS = ("pca", "autoencoder")


class DigitsLatents(Target):
    """The 1797 digits, encoded to `latent_dim` by a PCA fitted on the training rows only,
    then standardised with training statistics. The truth is unknown: no log_prob."""

    name = "digits_latents"
    can_sample = False  # a fixed data set
    can_decode = True

    def __init__(self, latent_dim: int = 4, encoder: str = "pca", ae_steps: int = 3000) -> None:
        if encoder not in ENCODERS:
            raise TargetError(
                f"target digits_latents: encoder={encoder!r}; choose one of: {', '.join(ENCODERS)}"
            )
        if not isinstance(latent_dim, int) or isinstance(latent_dim, bool) or latent_dim < 1:
            raise TargetError(f"target digits_latents: latent_dim={latent_dim!r} must be >= 1")
        if latent_dim > PIXELS:
            raise TargetError(
                f"target digits_latents: latent_dim={latent_dim} exceeds the {PIXELS} pixels "
                "of an 8x8 digit; choose 1..64"
            )
        from sklearn.datasets import load_digits

        self.dim = latent_dim
        self.encoder = encoder
        self.ae_steps = ae_steps
        self.pixels = load_digits().data.astype(np.float64)  # ships with scikit-learn
        self._codec: _PCACodec | _AutoencoderCodec | None = None
        self._mean = self._std = None
        self._cache_dir: Path | None = None

    def use_cache_dir(self, folder: Path) -> None:
        """Where a trained autoencoder is kept, so each (latent_dim, seed) is trained once."""
        self._cache_dir = Path(folder)

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
        if self.encoder == "pca":
            self._codec = _PCACodec(self.dim, seed, parts[0])
        else:
            self._codec = _AutoencoderCodec.fit_or_load(
                self.dim, seed, parts[0], self.ae_steps, self._cache_dir
            )
        latents = [self._codec.encode(part) for part in parts]
        self._mean, std = latents[0].mean(0), latents[0].std(0)
        self._std = np.where(std > 1e-8, std, 1.0)  # a few pixels never vary: no direction
        train, val, test = (
            torch.as_tensor((z - self._mean) / self._std, dtype=torch.float32) for z in latents
        )
        return Split(train, val, test)

    def decode(self, latents: Tensor) -> np.ndarray:
        """Latents (n, dim) back to 8x8 images with pixel values in [0, 16]."""
        if self._codec is None:
            raise RuntimeError("decode needs the encoder: call split() first")
        z = latents.detach().cpu().double().numpy() * self._std + self._mean
        return np.clip(self._codec.decode(z), 0, 16).reshape(-1, 8, 8)


class _PCACodec:
    def __init__(self, dim: int, seed: int, train_pixels: np.ndarray) -> None:
        from sklearn.decomposition import PCA

        self.pca = PCA(n_components=dim, random_state=seed).fit(train_pixels)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.pca.transform(pixels)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        return self.pca.inverse_transform(latents)


class _AutoencoderCodec:
    """A small MLP autoencoder (64-128-d-128-64) on pixels / 16, trained on the train rows."""

    def __init__(self, dim: int) -> None:
        self.encoder = nn.Sequential(nn.Linear(PIXELS, 128), nn.ELU(), nn.Linear(128, dim))
        self.decoder = nn.Sequential(nn.Linear(dim, 128), nn.ELU(), nn.Linear(128, PIXELS))

    @classmethod
    def fit_or_load(
        cls, dim: int, seed: int, train_pixels: np.ndarray, steps: int, cache: Path | None
    ) -> _AutoencoderCodec:
        path = cache / f"digits_autoencoder_d{dim}_seed{seed}_steps{steps}.pt" if cache else None
        with isolated_global_rng():
            torch.manual_seed(seed)
            codec = cls(dim)
            if path is not None and path.exists():
                state = torch.load(path, weights_only=True)
                codec.encoder.load_state_dict(state["encoder"])
                codec.decoder.load_state_dict(state["decoder"])
                return codec
            codec._fit(torch.as_tensor(train_pixels / 16.0, dtype=torch.float32), steps)
        if path is not None:
            io.save_torch(
                path, {"encoder": codec.encoder.state_dict(), "decoder": codec.decoder.state_dict()}
            )
        return codec

    def _fit(self, x: Tensor, steps: int) -> None:
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        optimizer = torch.optim.Adam(params, lr=2e-3)
        for _ in range(steps):
            batch = x[torch.randint(len(x), (128,))]
            loss = ((self.decoder(self.encoder(batch)) - batch) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def encode(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(pixels / 16.0, dtype=torch.float32)
        return self.encoder(x).double().numpy()

    @torch.no_grad()
    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = torch.as_tensor(latents, dtype=torch.float32)
        return self.decoder(z).double().numpy() * 16.0


def digits_latents(
    latent_dim: int = 4, encoder: str = "pca", ae_steps: int = 3000
) -> DigitsLatents:
    return DigitsLatents(latent_dim, encoder, ae_steps)
