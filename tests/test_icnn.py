"""The ICNN is convex in x for every method, and its constrained weights stay non-negative."""

from __future__ import annotations

import math

import pytest
import torch

from icnn_bench.errors import ConfigError
from icnn_bench.methods import build_method, method_names, method_settings
from icnn_bench.models.icnn import INITS, ICNNSpec, energy, init_params

METHODS = method_names()  # every method the package's conf names


def make_source(name, spec, init):
    """The method as its YAML configures it, with a small body where it has one."""
    torch.manual_seed(1)
    options = method_settings(name)
    if "body" in options:
        options["body"] = [8, 8, 12]
    source = build_method(options, spec, init)
    source.use_training_split(torch.randn(200, spec.dim))  # what lift_nostoch pools
    return source


def midpoint_gaps(params, spec, n_lines=2000, scale=4.0, seed=0):
    """E((a+b)/2) - (E(a)+E(b))/2 on random segments: <= 0 everywhere iff midpoint-convex."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_lines, spec.dim, generator=g, dtype=torch.float64) * scale
    b = torch.randn(n_lines, spec.dim, generator=g, dtype=torch.float64) * scale
    p64 = {k: v.double() for k, v in params.items()}
    mid = energy(p64, 0.5 * (a + b), spec)
    return mid - 0.5 * (energy(p64, a, spec) + energy(p64, b, spec))


def push_weights_negative(source, spec, steps=30):
    """Train with a loss that rewards negative constrained weights, the hard case for positivity."""
    opt = torch.optim.Adam(source.parameters(), lr=0.5)
    batch = torch.randn(32, spec.dim)
    constrained = spec.constrained_names()
    for _ in range(steps):
        params = source(batch)
        loss = sum(params[k].sum() for k in constrained) + energy(params, batch, spec).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        source.project_()
    return batch


def evaluated(source, batch):
    """The emission a model is evaluated with (pinned on `batch`); training's for methods
    whose training emission is non-negative too."""
    if source.nonnegative_in_training:
        return source(batch)
    source.pin(batch)
    try:
        return source(batch)
    finally:
        source.unpin()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_energy_is_convex_along_random_lines_before_and_after_training(method, spec, init):
    source = make_source(method, spec, init)
    batch = torch.randn(32, spec.dim)
    assert midpoint_gaps(evaluated(source, batch), spec).max() <= 1e-9
    push_weights_negative(source, spec)
    assert midpoint_gaps(evaluated(source, batch), spec, seed=1).max() <= 1e-9
    source.pin(batch)  # the evaluation emission of every method
    assert midpoint_gaps(source(batch), spec, seed=2).max() <= 1e-9


def test_midpoint_check_detects_a_nonconvex_energy(spec, init):
    broken = {k: v.clone() for k, v in init.items()}
    broken["wL"] = -broken["wL"] - 1.0  # a negative output weight breaks convexity
    assert midpoint_gaps(broken, spec).max() > 1e-6


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_constrained_weight_is_nonnegative_before_and_after_steps(method, spec, init):
    source = make_source(method, spec, init)
    batch = torch.randn(32, spec.dim)
    for name in spec.constrained_names():
        assert (evaluated(source, batch)[name] >= 0).all(), name
    push_weights_negative(source, spec)
    emitted = evaluated(source, batch)
    for name in spec.constrained_names():
        assert (emitted[name] >= 0).all(), name
    if method in ("pgd", "relu", "penalty"):  # driven onto the bound, or negative
        assert source.dead_fraction() > 0


@pytest.mark.parametrize("init_name", INITS)
def test_inits_are_nonnegative_and_have_the_right_shapes(init_name, spec):
    params = init_params(spec, init_name, torch.Generator().manual_seed(0))
    for t in spec.tensors():
        assert params[t.name].shape == t.shape
        if t.constrained:
            assert (params[t.name] >= 0).all()


def test_folded_normal_has_the_papers_scale():
    spec = ICNNSpec(dim=1, width=400, depth=2)
    w = init_params(spec, "folded_normal", torch.Generator().manual_seed(0))["W1"]
    # |N(0, pi/(2n))| has mean sqrt(2/pi) * sqrt(pi/(2n)) = 1/sqrt(n)
    assert w.mean().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)


def test_convex_init_keeps_the_preactivation_mean_near_zero():
    # Hoedt & Klambauer: the negative bias cancels the mean that positive weights add.
    spec = ICNNSpec(dim=1, width=256, depth=2)
    params = init_params(spec, "convex_init", torch.Generator().manual_seed(0))
    z = torch.relu(torch.randn(4000, 256))  # unit-variance pre-activations through a ReLU
    pre = z @ params["W1"].T + params["b1"]
    assert abs(pre.mean().item()) < 0.15
    assert 0.5 < pre.var().item() < 2.0


@pytest.mark.parametrize("key,value", [("width", 0), ("depth", -1), ("dim", 0)])
def test_impossible_sizes_are_config_errors(key, value):
    sizes = {"dim": 1, "width": 4, "depth": 2, key: value}
    with pytest.raises(ConfigError, match=f"model.{key}"):
        ICNNSpec(**sizes)
