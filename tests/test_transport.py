"""Optimal transport with known maps: the pairs' maps against their definitions, the metrics
against a hand computation, and the W2 dual solver recovering a Gaussian map."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import torch

from icnn_bench.build import model_from_config
from icnn_bench.compose import compose
from icnn_bench.errors import ConfigError
from icnn_bench.runner import run
from icnn_bench.targets import build_target
from icnn_bench.targets.transport import GaussianPair, MixturePair


def test_the_gaussian_map_pushes_p_to_q_and_its_w2_is_the_closed_form():
    pair = GaussianPair(dim=3, pair_seed=1)
    generator = torch.Generator().manual_seed(0)
    y = pair.sample_q(200_000, generator).double()
    assert torch.allclose(y.mean(0), pair.mean_q, atol=0.02)
    assert torch.allclose(torch.cov(y.T), pair.cov_q, atol=0.03)
    matrix = pair.map_matrix  # the OT map of Gaussians is symmetric positive-definite
    assert torch.allclose(matrix, matrix.T, atol=1e-10) and torch.linalg.eigvalsh(matrix).min() > 0
    x = pair._draw_p(200_000, generator).double()
    cost = ((pair.true_map(x.float()).double() - x) ** 2).sum(-1).mean()
    assert float(cost) == pytest.approx(pair.constants()["w2_squared"], rel=0.02)
    one_d = GaussianPair(dim=1, pair_seed=0)  # 1-D: W2^2 = (m2 - m1)^2 + (s2 - s1)^2
    s1, s2 = one_d.cov_p.sqrt().item(), one_d.cov_q.sqrt().item()
    expected = one_d.mean_q.item() ** 2 + (s2 - s1) ** 2
    assert one_d.constants()["w2_squared"] == pytest.approx(expected, rel=1e-9)


def test_the_mixture_map_is_the_gradient_of_its_convex_potential():
    pair = MixturePair(dim=4, pair_seed=0)
    x = pair._draw_p(64, torch.Generator().manual_seed(1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(pair.potential(x).sum(), x)
    assert torch.allclose(grad, pair.true_map(x.detach()), atol=1e-5)
    a, b = pair._draw_p(500, torch.Generator().manual_seed(2)), pair._draw_p(500)
    monotone = ((pair.true_map(a) - pair.true_map(b)) * (a - b)).sum(-1)
    assert bool((monotone >= -1e-5).all())  # the gradient of a convex function is monotone
    constants = pair.constants()  # Monte Carlo: estimates with their standard errors
    assert constants["w2_squared_se"] > 0 and constants["var_q"] > 0


def test_the_metrics_match_a_hand_computation(tiny_config):
    pair = build_target("gaussian_pair", {"dim": 2, "pair_seed": 0})
    config = tiny_config("pgd")
    config["model"] = {**config["model"], "name": "ot_dual", "alpha": 0.0, "inner_steps": 1}
    model = model_from_config(config, pair, seed=0)
    rows = pair.sample(500, seed=3)
    fitted = model.transport(rows).detach()
    true = pair.true_map(rows)
    constants = pair.constants()
    by_hand = 100 * ((fitted - true) ** 2).sum(-1).mean() / constants["var_q"]
    a, b = (fitted - rows).flatten(), (true - rows).flatten()
    cosine = a @ b / (a.norm() * b.norm())
    w2 = ((fitted - rows) ** 2).sum(-1).mean()
    metrics = model.own_metrics(rows, pair)
    assert metrics["l2_uvp"] == pytest.approx(float(by_hand), rel=1e-5)
    assert metrics["cos_gap"] == pytest.approx(float(1 - cosine), abs=1e-6)
    expected = abs(float(w2) - constants["w2_squared"]) / constants["w2_squared"]
    assert metrics["w2_rel_err"] == pytest.approx(expected, rel=1e-5)


def test_only_psi_is_the_loops_and_a_penalty_stays_on_its_own_network(tiny_config):
    pair = build_target("gaussian_pair", {"dim": 2})
    config = tiny_config("penalty")
    config["model"] = {**config["model"], "name": "ot_dual", "alpha": 0.0, "inner_steps": 2}
    model = model_from_config(config, pair, seed=0)
    psi_ids = {id(p) for p in model.psi.parameters()}
    assert {id(p) for p in model.trainable_parameters()} <= psi_ids
    phi_before = [p.detach().clone() for p in model.phi.parameters()]
    batch = pair.sample(64, seed=0)
    model.loss_backward(batch)
    assert all(p.grad is None for p in model.phi.parameters())  # phi learns in its inner steps
    changed = zip(phi_before, model.phi.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in changed)
    assert any(p.grad is not None for p in model.psi.parameters())


def test_an_ot_model_needs_a_transport_pair(tiny_config):
    config = tiny_config("pgd")
    config["model"] = {**config["model"], "name": "ot_dual"}
    with pytest.raises(ConfigError, match="needs a transport pair target"):
        model_from_config(config, build_target("gumbel"), seed=0)


def test_the_solver_recovers_the_gaussian_map_at_d2():
    config = compose(
        ["experiment=ot_gaussian", "method=pgd", "target.params.dim=2", "trainer.steps=400",
         "trainer.eval_every=200", "device=cpu", "logger.progress=false"]
    )  # fmt: skip
    config.pop("seeds", None)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(config, Path(tmp) / "run")
        assert (Path(tmp) / "run" / "transport_map.csv").is_file()
    assert result["status"] == "ok"
    # the identity map's L2-UVP is 100 W2^2 / Var(Q); the learned map does far better
    identity = 100 * result["true_w2_squared"] / result["true_var_q"]
    assert result["l2_uvp"] < 5.0 < identity
    assert result["cos_gap"] < 0.05 and math.isfinite(result["val_l2_uvp"])
