"""Importance-sampled log Z: converges to the truth, agrees with quadrature, fails legibly."""

from __future__ import annotations

import math

import pytest
import torch

from icnn_bench import load_run
from icnn_bench.build import log_z_from_config
from icnn_bench.compose import compose
from icnn_bench.errors import ConfigError
from icnn_bench.log_z.importance import GaussianProposal, ImportanceLogZ, NonFiniteWeights
from icnn_bench.log_z.quadrature import QuadratureLogZ
from icnn_bench.runner import run
from icnn_bench.targets import build_target


def test_estimate_converges_to_the_exact_log_z_as_samples_grow():
    # E(x) = 0.5 x^T A x with a known A: log Z = (d/2) log(2 pi) - 0.5 log det A
    d = 6
    g = torch.Generator().manual_seed(0)
    m = torch.randn(d, d, generator=g)
    precision = m @ m.T / d + torch.eye(d)
    exact = 0.5 * d * math.log(2 * math.pi) - 0.5 * float(torch.logdet(precision))
    data = torch.distributions.MultivariateNormal(
        torch.zeros(d), precision_matrix=precision
    ).sample((4000,))
    proposal = GaussianProposal.from_data(data, widen=1.3)

    def energy(x):
        return 0.5 * ((x @ precision) * x).sum(-1)

    errors, ses = [], []
    for samples in (64, 1024, 16384):
        est = ImportanceLogZ(proposal, eval_samples=samples, seed=1).estimate(energy)
        errors.append(abs(est.value - exact))
        ses.append(est.se)
        assert abs(est.value - exact) < 4 * est.se + 1e-3
    assert ses[0] > ses[1] > ses[2]
    assert errors[2] < 0.02


def test_importance_agrees_with_quadrature_on_a_trained_2d_model(tiny_config, tmp_path):
    config = tiny_config(
        "lift",
        target={"name": "rotated_product", "params": {"dim": 2, "factors": ["gumbel", "laplace"]}},
        log_z={"estimator": "quadrature", "train_nodes": 4096, "eval_nodes": 360_000},
        trainer={"steps": 60, "eval_every": 30},
    )
    result = run(config, tmp_path)
    assert result["status"] == "ok", result["error"]
    model = load_run(tmp_path)
    assert isinstance(model.log_z_estimator, QuadratureLogZ)
    quadrature = model.log_z_estimate()
    target = build_target("rotated_product", {"dim": 2, "factors": ["gumbel", "laplace"]})
    train = target.split(0, 600, 200, 400).train
    importance = ImportanceLogZ(GaussianProposal.from_data(train, widen=2.0), eval_samples=8192)
    estimate = importance.estimate(model.energy)
    assert estimate.se > 0
    assert abs(estimate.value - quadrature.value) < 3 * estimate.se


def test_importance_runs_report_the_standard_error(tiny_config, tmp_path):
    config = tiny_config(
        "softplus",
        target={"name": "correlated_gaussian", "params": {"dim": 3, "rho": 0.5}},
        log_z={
            "estimator": "importance",
            "train_samples": 128,
            "eval_samples": 2048,
            "widen": 1.5,
        },
    )
    result = run(config, tmp_path)
    assert result["status"] == "ok", result["error"]
    assert result["log_z_estimator"] == "importance" and result["log_z_samples"] == 2048
    assert result["log_z_se"] > 0 and result["test_nll_se"] > result["log_z_se"]
    assert result["kl"] is None  # no grid in 3-D: only the sample estimate NLL - entropy
    assert result["kl_mc"] == pytest.approx(result["test_nll"] - result["entropy"])


def test_non_finite_importance_weights_stop_the_run_with_one_line(
    tiny_config, tmp_path, monkeypatch
):
    def overflow(self, n, generator):
        y = torch.zeros(n, self.mean.shape[0])
        return y, torch.full((n,), -math.inf)

    monkeypatch.setattr(GaussianProposal, "sample", overflow)
    config = tiny_config(
        target={"name": "correlated_gaussian", "params": {"dim": 3}},
        log_z={"estimator": "importance", "train_samples": 64, "eval_samples": 64},
    )
    result = run(config, tmp_path)
    assert result["status"] == "diverged"
    assert result["error"].startswith("importance weights are not finite")
    assert "\n" not in result["error"]


def test_estimator_refuses_impossible_settings():
    proposal = GaussianProposal(torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="eval_samples=1"):
        ImportanceLogZ(proposal, eval_samples=1)
    with pytest.raises(ValueError, match="widen"):
        GaussianProposal.from_data(torch.randn(10, 2), widen=0)
    with pytest.raises(NonFiniteWeights):
        ImportanceLogZ(proposal, eval_samples=8).estimate(lambda y: y.sum(-1) * math.nan)


def test_flow_proposal_learns_the_energy_by_reverse_kl():
    pytest.importorskip("zuko")
    from icnn_bench.log_z.importance import FlowProposal

    torch.manual_seed(0)
    scale = torch.tensor([0.5, 2.0, 1.0])
    shift = torch.tensor([1.0, -1.0, 0.5])

    def energy(x):
        return 0.5 * (((x - shift) / scale) ** 2).sum(-1)

    exact = float(torch.log(scale).sum()) + 1.5 * math.log(2 * math.pi)
    estimator = ImportanceLogZ(
        FlowProposal(3, transforms=2, hidden=(32, 32), lr=1e-2),
        train_samples=256,
        eval_samples=4096,
    )
    before = estimator.estimate(energy)
    for _ in range(300):
        estimator(energy, training=True)  # each call takes one reverse-KL step on the flow
    after = estimator.estimate(energy)
    assert after.se < before.se / 3  # the proposal moved toward exp(-E)
    assert abs(after.value - exact) < 3 * after.se + 1e-3


def test_flow_proposal_without_zuko_is_one_line(tiny_config, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zuko", None)
    config = tiny_config(
        target={"name": "correlated_gaussian", "params": {"dim": 3}},
        log_z={"estimator": "importance", "proposal": "flow"},
    )
    result = run(config, tmp_path)
    assert result["status"] == "failed"
    assert result["error"].startswith("log_z.proposal=flow needs the zuko package")


def test_a_run_with_the_flow_proposal(tiny_config, tmp_path):
    pytest.importorskip("zuko")
    config = tiny_config(
        "lift",
        target={"name": "correlated_gaussian", "params": {"dim": 3}},
        log_z={
            "estimator": "importance",
            "proposal": "flow",
            "train_samples": 64,
            "eval_samples": 512,
            "flow": {"transforms": 1, "hidden": [16]},
        },
    )
    result = run(config, tmp_path)
    assert result["status"] == "ok", result["error"]
    assert result["log_z_se"] > 0
    from icnn_bench import load_run

    model = load_run(tmp_path)  # the trained flow comes back with the weights
    assert model.log_z_estimate().value == pytest.approx(result["log_z"], abs=1e-5)


def test_importance_sampling_can_be_forced_in_1d(tiny_config, tmp_path):
    config = tiny_config(
        log_z={"estimator": "importance", "train_samples": 128, "eval_samples": 1024}
    )
    result = run(config, tmp_path)
    assert result["status"] == "ok", result["error"]
    assert result["log_z_estimator"] == "importance" and result["log_z_se"] > 0
    assert (tmp_path / "density.csv").exists()


def test_an_estimator_named_by_key_says_to_choose_it_by_its_group():
    # log_z.estimator=importance keeps the quadrature settings of the default group
    config = compose(["log_z.estimator=importance"])
    target = build_target("rotated_product", {"dim": 3})
    with pytest.raises(ConfigError, match=r"train_rule.*log_z=importance"):
        log_z_from_config(config["log_z"], target, target.sample(100, 0))
    chosen = compose(["log_z=importance"])
    assert log_z_from_config(chosen["log_z"], target, target.sample(100, 0)) is not None
