"""log Z by quadrature and the grid distances against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from icnn_bench import load_run
from icnn_bench.build import target_from_config
from icnn_bench.log_z.quadrature import QuadratureLogZ, gauss_legendre_grid, midpoint_grid
from icnn_bench.metrics import grid_divergences
from icnn_bench.runner import run


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


def test_gauss_legendre_weights_integrate_polynomials_and_a_gaussian_in_two_d():
    nodes, log_w = gauss_legendre_grid([(-1.0, 3.0), (0.0, 2.0)], 32**2)
    assert nodes.shape == (1024, 2)
    weights = log_w.double().exp()
    assert float(weights.sum()) == pytest.approx(8.0, rel=1e-6)  # the box's area
    x, y = nodes[:, 0].double(), nodes[:, 1].double()
    assert float((weights * x**5 * y**3).sum()) == pytest.approx((3**6 - 1) / 6 * 4, rel=1e-5)
    estimator = QuadratureLogZ([(-8.0, 8.0), (-8.0, 8.0)], train_nodes=64**2)
    log_z = estimator(lambda p: 0.5 * (p**2).sum(-1), training=True)
    assert float(log_z) == pytest.approx(math.log(2 * math.pi), abs=1e-5)


def test_training_rule_stays_within_1e4_of_the_8000_point_log_z_of_a_trained_model(
    tiny_config, tmp_path
):
    """The paper_1d recipe's network (width 128, depth 3) trained by the lift, whose large
    emitted weights make the sharpest energies, on gamma (the worst case seen in paper_1d)."""
    config = tiny_config(
        "lift",
        target={"name": "gamma", "params": {}},
        model={"width": 128},
        log_z={"estimator": "quadrature", "eval_nodes": 8000},
        trainer={"steps": 400, "batch_size": 256, "lr": 1e-3, "eval_every": 400},
        data={"n_train": 2000},
    )
    config["method"]["body"] = [64, 64, 96]
    assert run(config, tmp_path)["status"] == "ok"
    model = load_run(tmp_path)
    energy = model._energy_fn(model.method.pinned)
    estimator = model.log_z_estimator
    assert estimator.train_grid.shape[0] == 128  # the default: 8 panels of 16 nodes
    reference = float(estimator(energy, training=False))
    assert float(estimator(energy, training=True)) == pytest.approx(reference, abs=1e-4)
    coarse = QuadratureLogZ(target_from_config(config["target"]).box(), train_nodes=32)
    assert abs(float(coarse(energy, training=True)) - reference) > 1e-6  # the test can fail
