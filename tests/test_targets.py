"""1-D targets: exact densities that integrate to one, entropies, seeded splits, bad parameters."""

from __future__ import annotations

import math

import pytest
import torch

from icnn_bench.targets import TargetError, build_target
from icnn_bench.targets.univariate import UNIVARIATE, _entropy_by_quadrature


@pytest.mark.parametrize("name", sorted(UNIVARIATE))
def test_density_integrates_to_one_on_its_box(name):
    target = build_target(name)
    ((lo, hi),) = target.box()
    n = 200_000
    h = (hi - lo) / n
    x = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    mass = float(target.log_prob(x).exp().sum() * h)
    assert mass == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(UNIVARIATE))
def test_samples_match_the_density_and_entropy(name):
    target = build_target(name)
    x = target.sample(40_000, seed=3)
    ((lo, hi),) = target.box()
    assert x.shape == (40_000, 1)
    assert bool(((x >= lo) & (x <= hi)).all())
    log_p = target.log_prob(x.double())
    # -mean log p(x) estimates the entropy: agreement within 5 standard errors
    se = float(log_p.std()) / math.sqrt(len(log_p))
    assert float(-log_p.mean()) == pytest.approx(target.entropy(), abs=5 * se)


@pytest.mark.parametrize("name", ["gumbel", "gamma", "beta", "logistic"])
def test_closed_form_entropy_agrees_with_quadrature(name):
    target = build_target(name)
    assert _entropy_by_quadrature(target) == pytest.approx(target.entropy(), abs=1e-4)


def test_same_seed_same_split_and_seed_zero_is_a_real_seed():
    target = build_target("laplace")
    a, b = target.split(0, 100, 20, 30), target.split(0, 100, 20, 30)
    torch.testing.assert_close(a.train, b.train)
    torch.testing.assert_close(a.test, b.test)
    assert not torch.allclose(a.train, target.split(1, 100, 20, 30).train)
    assert not torch.allclose(a.train[:20], a.val)


def test_sampling_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_target("gumbel").sample(10, seed=9)
    torch.testing.assert_close(torch.rand(3), expected)


def test_outside_the_support_the_density_is_zero():
    assert build_target("gamma").log_prob(torch.tensor([[-1.0]])).item() == -math.inf
    assert build_target("beta").log_prob(torch.tensor([[1.5]])).item() == -math.inf


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("skewnormal", {"scale": -1.0}, "scale=-1.0 must be a positive finite number"),
        ("skewnormal", {"shape": float("nan")}, "shape=nan must be a finite number"),
        ("gamma", {"concentration": 0.5}, "not log-concave"),
        ("beta", {"a": 0.5}, "log-concave"),
        ("gaussian", {"width": 2.0}, "target gaussian"),
    ],
)
def test_impossible_parameters_are_one_line_errors(name, params, message):
    with pytest.raises(TargetError, match=message) as info:
        build_target(name, params)
    assert "\n" not in str(info.value)


def test_unknown_target_lists_the_choices():
    from icnn_bench.targets import target_names

    with pytest.raises(TargetError, match="unknown target 'cauchy'; choose one of: beta, ") as info:
        build_target("cauchy")
    assert all(name in str(info.value) for name in target_names())


@pytest.mark.parametrize("name", ["eight_gaussians", "checkerboard"])
def test_2d_toy_densities_integrate_to_one_and_cover_their_samples(name):
    target = build_target(name)
    (x0, x1), (y0, y1) = target.box()
    n = 800
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, ys)
    cell = float((xs[1] - xs[0]) * (ys[1] - ys[0]))
    assert float(target.log_prob(grid).exp().sum() * cell) == pytest.approx(1.0, abs=1e-2)
    samples = target.sample(5000, seed=0)
    assert bool(torch.isfinite(target.log_prob(samples)).all())


@pytest.mark.parametrize("name", ["eight_gaussians", "moons", "circles", "checkerboard"])
def test_2d_toys_are_seeded_and_inside_their_box(name):
    target = build_target(name)
    a, b = target.sample(2000, seed=4), target.sample(2000, seed=4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, target.sample(2000, seed=5))
    for axis, (lo, hi) in enumerate(target.box()):
        assert bool(((a[:, axis] > lo) & (a[:, axis] < hi)).all())
