"""The field's constraint methods: each one's initial law against its source's formula, the
penalty's loss term and projection, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from test_resume import InterruptAt, comparable, same_files

from icnn_bench.methods import build_method
from icnn_bench.methods.exp import log_normal_moments
from icnn_bench.methods.relu import SCALE
from icnn_bench.models.icnn import ICNNSpec, init_params
from icnn_bench.runner import run

WIDE = ICNNSpec(dim=2, width=256, depth=3)
FIELD = ["exp", "relu", "negexp", "penalty", "pgd_hk", "softplus_hk", "softplus_cpflow"]


def built(name: str, spec: ICNNSpec = WIDE, seed: int = 0):
    init = init_params(spec, "folded_normal", torch.Generator().manual_seed(seed))
    return build_method(name, spec, init, generator=torch.Generator().manual_seed(seed + 1))


def test_exp_draws_the_sources_log_normal_and_shifts_the_bias():
    n = WIDE.width
    mean, variance, shift = log_normal_moments(n)
    # the source's formula, written out: tmp = n (2 pi + 3 sqrt3 - 6)
    tmp = n * (2 * math.pi + 3 * 3**0.5 - 6)
    assert shift == pytest.approx((3 * n / (4 * math.pi - 3 * 3**0.5 + tmp)) ** 0.5)
    assert variance == pytest.approx(math.log(10 - 3 * 3**0.5 + tmp) - math.log(6 * math.pi))
    raw = built("exp").pre_positivity()["W1"].detach()
    assert raw.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(variance / raw.numel()))
    assert raw.var().item() == pytest.approx(variance, rel=0.02)
    emitted = built("exp")(None)
    assert torch.equal(emitted["W1"], raw.exp())
    assert torch.allclose(emitted["b1"], torch.full((n,), -shift))
    assert torch.allclose(emitted["b2"], torch.full((n,), -shift))


def test_exp_keeps_the_effective_weights_under_normalise_positive():
    plain = built("exp", ICNNSpec(dim=2, width=64, depth=2))(None)["W1"]
    scaled_spec = ICNNSpec(dim=2, width=64, depth=2, normalise_positive=True)
    scaled = built("exp", scaled_spec)(None)["W1"]
    torch.testing.assert_close(scaled / 64, plain)


def test_relu_draws_the_sources_scaled_uniform_and_shifts_the_bias():
    n = WIDE.width
    raw = built("relu").pre_positivity()["W1"].detach()
    bound = math.sqrt(6 / n) * 4 / math.sqrt(8 - 3 / math.pi)
    assert pytest.approx(4 / math.sqrt(8 - 3 / math.pi)) == SCALE
    assert raw.abs().max().item() <= bound
    assert raw.abs().max().item() > 0.99 * bound  # uniform up to the bound
    assert raw.var().item() == pytest.approx(bound**2 / 3, rel=0.02)
    method = built("relu")
    assert torch.allclose(
        method(None)["b1"], torch.full((n,), -((3 * n / (8 * math.pi - 3)) ** 0.5))
    )
    every = torch.cat([p.detach().reshape(-1) for p in method.constrained_parameters()])
    assert method.dead_fraction() == pytest.approx((every <= 0).float().mean().item())
    assert 0.45 < method.dead_fraction() < 0.55  # half the uniform draw is below zero: dead


def test_negexp_is_kaiming_normal_with_the_sources_jump_at_zero():
    method = built("negexp")
    raw = method.pre_positivity()["W1"].detach()
    assert raw.std().item() == pytest.approx(math.sqrt(2 / WIDE.width), rel=0.02)
    assert torch.equal(method(None)["b1"], torch.zeros(WIDE.width))
    v = torch.tensor([-1e-4, 0.0, 1e-4, 0.5])
    w = method.positive(v)
    assert w[0].item() == pytest.approx(1.0, abs=1e-3) and w[1].item() == 0.0  # the jump
    assert torch.equal(w[2:], v[2:])


def test_cpflow_softplus_is_softplus_of_a_linear_init_over_fan_in():
    method = built("softplus_cpflow")
    raw = method.pre_positivity()["W1"].detach()
    bound = 1 / math.sqrt(WIDE.width)
    assert raw.abs().max().item() <= bound and raw.var().item() == pytest.approx(
        bound**2 / 3, rel=0.02
    )
    torch.testing.assert_close(method(None)["W1"], torch.nn.functional.softplus(raw) / WIDE.width)
    flow_spec = ICNNSpec(dim=2, width=64, depth=2, normalise_positive=True)
    flow = built("softplus_cpflow", flow_spec)  # the network divides by the width itself
    torch.testing.assert_close(
        flow(None)["W1"], torch.nn.functional.softplus(flow.pre_positivity()["W1"].detach())
    )


def test_the_penalty_is_lam_times_squared_negative_part_and_evaluation_projects():
    method = built("penalty")
    with torch.no_grad():
        method.params["W1"][0, :3] = torch.tensor([-0.5, -0.25, 0.1])
        method.params["wL"][0] = -2.0
    expected = 0.1 * (0.25 + 0.0625 + 4.0)
    assert method.penalty().item() == pytest.approx(expected, rel=1e-6)
    assert method(None)["W1"][0, 0].item() == -0.5  # trained as it is
    method.pin(torch.zeros(4, 2))
    assert (method(None)["W1"] >= 0).all() and method(None)["W1"][0, 0].item() == 0.0
    negative = 0.5 + 0.25 + 2.0
    total = sum(p.abs().sum().item() for p in method.constrained_parameters())
    assert method.diagnostics()["neg_mass"] == pytest.approx(negative / total, rel=1e-5)


def test_pgd_hk_and_softplus_hk_start_from_the_principled_init(tiny_config):
    from icnn_bench.build import model_from_config
    from icnn_bench.targets import build_target

    target = build_target("gaussian", {"loc": 0.0, "scale": 1.0})
    for name in ("pgd_hk", "softplus_hk"):
        config = tiny_config(name)
        config["method"]["init"] = "convex_init"
        model = model_from_config(config, target, seed=0)
        reference = init_params(
            ICNNSpec(dim=1, width=16, depth=3), "convex_init", torch.Generator().manual_seed(0)
        )
        emitted = model.method(None)
        torch.testing.assert_close(emitted["W1"], reference["W1"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(emitted["b1"], reference["b1"])


def test_a_penalty_run_records_the_negative_mass_and_evaluates_a_convex_model(
    tiny_config, tmp_path
):
    config = tiny_config("penalty", trainer={"lr": 0.05, "steps": 60})
    config["method"]["lam"] = 1e-4  # weak: weights do go negative
    result = run(config, tmp_path)
    assert result["status"] == "ok"
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert "neg_mass" in metrics and metrics["neg_mass"].iloc[0] == 0.0
    assert metrics["neg_mass"].iloc[-1] > 0
    pinned = torch.load(tmp_path / "weights.pt", weights_only=True)["pinned"][0]
    assert all((pinned[k] >= 0).all() for k in ("W1", "W2", "wL"))


@pytest.mark.parametrize("name", FIELD)
def test_an_interrupted_run_of_each_field_method_resumes_bit_identically(
    tiny_config, tmp_path, name
):
    config = tiny_config(name, trainer={"steps": 40, "eval_every": 10, "checkpoint_every": 15})
    if name.endswith("_hk"):
        config["method"]["init"] = "convex_init"
    whole = run(config, tmp_path / "whole")
    assert whole["status"] == "ok", whole["error"]
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "cut", sinks=[InterruptAt(20)])
    resumed = run(config, tmp_path / "cut")
    assert resumed["resumed_from_step"] == 15
    assert comparable(resumed) == comparable(whole)
    same_files(tmp_path / "whole", tmp_path / "cut")
    saved = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert saved["method"] == name


def test_a_potential_that_is_not_convex_stops_the_run_as_diverged(
    tiny_config, tmp_path, monkeypatch
):
    from icnn_bench.errors import Diverged
    from icnn_bench.models import potential

    with pytest.raises(Diverged, match="not positive definite at 1 of 2 points"):
        potential.cholesky_log_det(torch.stack([torch.eye(2), -torch.eye(2)]))
    calls = {"n": 0}
    original = potential.cholesky_log_det

    def fails_at_the_fifth(hess):
        calls["n"] += 1
        return original(-hess if calls["n"] == 5 else hess)

    monkeypatch.setattr(potential, "cholesky_log_det", fails_at_the_fifth)
    from test_resume import FLOW_2D

    config = {**FLOW_2D, "model": {**FLOW_2D["model"], "log_det": "exact"}}
    result = run(config, tmp_path)
    assert result["status"] == "diverged" and "not positive definite" in result["error"]
