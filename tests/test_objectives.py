"""log Z by quadrature and the grid distances against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from icnn_bench.metrics import grid_divergences
from icnn_bench.objectives.quadrature import QuadratureLogZ, midpoint_grid


def test_quadrature_nll_of_a_gaussian_energy_equals_the_closed_form():
    sigma, mu = 1.7, 0.4
    estimator = QuadratureLogZ([(-15.0, 15.0)], train_nodes=1024, eval_nodes=8000)

    def energy(x):
        return ((x[:, 0] - mu) ** 2) / (2 * sigma**2)

    closed_log_z = math.log(math.sqrt(2 * math.pi) * sigma)
    for training in (True, False):
        assert float(estimator(energy, training)) == pytest.approx(closed_log_z, abs=1e-5)
    x = torch.randn(1000, 1, generator=torch.Generator().manual_seed(0)) * sigma + mu
    nll = float(energy(x).mean() + estimator(energy, False))
    closed_nll = float((((x[:, 0] - mu) ** 2) / (2 * sigma**2)).mean()) + closed_log_z
    assert nll == pytest.approx(closed_nll, abs=1e-5)


def test_two_dimensional_quadrature():
    estimator = QuadratureLogZ([(-8.0, 8.0), (-8.0, 8.0)], train_nodes=64**2, eval_nodes=400**2)
    log_z = estimator(lambda x: 0.5 * (x**2).sum(-1), training=False)
    assert float(log_z) == pytest.approx(math.log(2 * math.pi), abs=1e-4)


def test_quadrature_refuses_more_than_two_dimensions():
    with pytest.raises(ValueError, match="d <= 2"):
        QuadratureLogZ([(0.0, 1.0)] * 3)


def gaussian_log_density(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(math.sqrt(2 * math.pi) * sigma)


def test_grid_divergences_match_gaussian_closed_forms():
    nodes, log_cell = midpoint_grid([(-20.0, 20.0)], 40_000)
    x = nodes[:, 0].double()
    m1, s1, m2, s2 = 0.0, 1.0, 0.7, 1.3
    out = grid_divergences(
        gaussian_log_density(x, m1, s1), gaussian_log_density(x, m2, s2), log_cell
    )
    kl = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    bc = math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(
        -((m1 - m2) ** 2) / (4 * (s1**2 + s2**2))
    )
    assert out["kl"] == pytest.approx(kl, abs=1e-6)
    assert out["hellinger"] == pytest.approx(math.sqrt(1 - bc), abs=1e-6)
    # equal-variance TV has a closed form too
    same = grid_divergences(
        gaussian_log_density(x, 0.0, 1.0), gaussian_log_density(x, 1.0, 1.0), log_cell
    )
    assert same["tv"] == pytest.approx(math.erf(0.5 / math.sqrt(2)), abs=1e-6)


def test_identical_densities_have_zero_distance():
    nodes, log_cell = midpoint_grid([(0.0, 1.0)], 1000)
    log_p = torch.log(6 * nodes[:, 0] * (1 - nodes[:, 0]))  # beta(2, 2)
    out = grid_divergences(log_p, log_p, log_cell)
    assert out["kl"] == pytest.approx(0.0, abs=1e-12)
    assert out["tv"] == pytest.approx(0.0, abs=1e-12)
    assert out["hellinger"] == pytest.approx(0.0, abs=1e-6)
