"""The lift's three ablations and the cross-covariance probe: each ablation deletes exactly its
ingredient, the probe statistics match an explicit computation, the probe is zero by
measurement without batch conditioning, and it never disturbs training."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from conftest import LIFT_OPTIONS

from icnn_bench.build import build_energy_model, target_from_config
from icnn_bench.diagnostics import cross_covariance, probe_cross_covariance
from icnn_bench.methods import build_method
from icnn_bench.runner import run

ABLATIONS = {
    "lift_noslack": {"slack": False},
    "lift_nocond": {"condition": "constant"},
    "lift_nostoch": {"stochastic": False},
}


def ablation_config(tiny_config, method: str):
    config = tiny_config("lift")
    config["method"] = {"name": method, **LIFT_OPTIONS, **ABLATIONS.get(method, {})}
    return config


def built(tiny_config, method: str, seed: int = 0):
    config = ablation_config(tiny_config, method)
    target = target_from_config(config["target"])
    train = target.split(0, 600, 200, 400).train
    model = build_energy_model(config, target, seed, train=train)
    model.use_training_split(train)
    return model, train


@pytest.mark.parametrize("method", ["lift", *ABLATIONS])
def test_each_ablation_trains_and_is_recorded_by_its_name(tiny_config, tmp_path, method):
    result = run(ablation_config(tiny_config, method), tmp_path)
    assert result["status"] == "ok", result.get("error")
    assert result["method"] == method


def test_noslack_keeps_the_slack_fixed_and_out_of_the_optimizer(tiny_config):
    model, train = built(tiny_config, "lift_noslack")
    slack = model.method.slack
    assert all(p is not slack for p in model.trainable_parameters())
    before = slack.detach().clone()
    loss = model.loss(train[:64])
    loss.backward()
    assert slack.grad is None and torch.equal(slack.detach(), before)


@pytest.mark.parametrize("method", ["lift_nocond", "lift_nostoch"])
def test_unconditioned_ablations_emit_the_same_weights_for_any_batch(tiny_config, method):
    model, train = built(tiny_config, method)
    first, second = model.method(train[:64]), model.method(train[300:364])
    for name in first:
        torch.testing.assert_close(first[name], second[name])
    lift, _ = built(tiny_config, "lift")
    assert not torch.equal(lift.method(train[:64])["W1"], lift.method(train[300:364])["W1"])


def test_lift_summary_is_permutation_invariant(spec, init):
    source = build_method("lift", spec, init, **LIFT_OPTIONS)
    batch = torch.randn(50, spec.dim, generator=torch.Generator().manual_seed(0))
    shuffled = batch[torch.randperm(50, generator=torch.Generator().manual_seed(1))]
    torch.testing.assert_close(source.summary(batch), source.summary(shuffled))


def test_cross_covariance_statistics_match_the_explicit_matrix():
    generator = torch.Generator().manual_seed(0)
    theta = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    grad = 0.5 * theta @ torch.randn(5, 5, generator=generator, dtype=torch.float64)
    grad = grad + torch.randn(7, 5, generator=generator, dtype=torch.float64)
    a, b = theta - theta.mean(0), grad - grad.mean(0)
    explicit = a.T @ b / 6
    stats = cross_covariance(theta, grad, permutations=200)
    assert stats.trace == pytest.approx(float(explicit.trace()))
    assert stats.frobenius == pytest.approx(float(explicit.norm()))
    asym = float((explicit - explicit.T).norm() / explicit.norm())
    assert stats.asymmetry == pytest.approx(asym)
    assert 0 < stats.p_value <= 1 and stats.probes == 7


def test_cross_covariance_refuses_the_same_sequence_in_both_slots():
    theta = torch.randn(8, 4)
    with pytest.raises(ValueError, match="same sequence in both slots"):
        cross_covariance(theta, theta)
    with pytest.raises(ValueError, match="same sequence in both slots"):
        cross_covariance(theta, theta.clone())


@pytest.mark.parametrize("method", ["pgd", "softplus", *ABLATIONS])
def test_probe_is_zero_without_batch_conditioning(tiny_config, method):
    if method in ("pgd", "softplus"):
        config = tiny_config(method)
        target = target_from_config(config["target"])
        train = target.split(0, 600, 200, 400).train
        model = build_energy_model(config, target, 0, train=train)
    else:
        model, train = built(tiny_config, method)
    stats = probe_cross_covariance(model, train, 64, 8, torch.Generator().manual_seed(3))
    # zero up to float rounding of recomputed emissions (the lift's is ~1 at initialisation)
    assert abs(stats.trace) < 1e-8 and stats.frobenius < 1e-8


def test_probe_is_nonzero_for_the_lift_at_initialisation(tiny_config):
    model, train = built(tiny_config, "lift")
    stats = probe_cross_covariance(model, train, 64, 8, torch.Generator().manual_seed(3))
    assert stats.frobenius > 1e-3 and abs(stats.trace) > 1e-3 and math.isfinite(stats.trace)


def test_the_probe_does_not_disturb_training(tiny_config, tmp_path):
    plain = ablation_config(tiny_config, "lift")
    probed = ablation_config(tiny_config, "lift")
    probed["trainer"].update(probe_every=10, probe_batches=4)
    first = run(plain, tmp_path / "plain")
    second = run(probed, tmp_path / "probed")
    assert first["test_nll"] == second["test_nll"]
    losses = [pd.read_csv(tmp_path / name / "train_loss.csv") for name in ("plain", "probed")]
    pd.testing.assert_frame_equal(*losses)
    metrics = pd.read_csv(tmp_path / "probed" / "metrics.csv")
    assert metrics["sigma_jac2"].notna().all() and "sigma_jac2" not in pd.read_csv(
        tmp_path / "plain" / "metrics.csv"
    )


class _Scripted(torch.nn.Module):
    """A model whose one softplus source's pre-positivity values we set by hand."""

    def __init__(self, spec, init):
        super().__init__()
        self.method = build_method("softplus", spec, init)

    def constraint_methods(self):
        return [self.method]

    def set_on_shoulder(self, on: list[bool]) -> None:
        values = torch.tensor([-6.0 if flag else 1.0 for flag in on])
        with torch.no_grad():
            self.method.params["wL"].copy_(values[: self.method.params["wL"].numel()])
            for name in self.method.spec.constrained_names():
                if name != "wL":
                    self.method.params[name].fill_(1.0)  # off the shoulder throughout


def test_shoulder_dwell_is_a_kaplan_meier_survival_of_spells():
    from icnn_bench.diagnostics import ShoulderDwell
    from icnn_bench.models.icnn import ICNNSpec, init_params

    spec = ICNNSpec(dim=1, width=3, depth=1)
    model = _Scripted(spec, init_params(spec, "folded_normal", torch.Generator().manual_seed(0)))
    dwell = ShoulderDwell(eval_every=10)
    # entry 0: on for 1 evaluation; entry 1: on for 2; entry 2: on from the 2nd one to the end
    for on in ([True, True, False], [False, True, True], [False, False, True]):
        model.set_on_shoulder(on)
        dwell.observe(model)
    rows = dwell.survival()
    # spells: 1 (ended), 2 (ended), 2 (censored); at 1: 3 at risk, 1 ends; at 2: 2, 1 ends
    assert [r["dwell_steps"] for r in rows] == [10, 20]
    assert [(r["at_risk"], r["ended"]) for r in rows] == [(3, 1), (2, 1)]
    assert rows[0]["survival"] == pytest.approx(2 / 3)
    assert rows[1]["survival"] == pytest.approx(1 / 3)


def test_dwell_is_written_for_shoulder_methods_and_drawn_by_the_report(tiny_config, tmp_path):
    from icnn_bench.report import make_report

    for method in ("softplus", "pgd"):
        assert run(tiny_config(method), tmp_path / method)["status"] == "ok"
    table = pd.read_csv(tmp_path / "softplus" / "dwell.csv")
    assert list(table.columns) == ["dwell_steps", "at_risk", "ended", "survival"]
    assert table["survival"].is_monotonic_decreasing or len(table) == 1
    assert not (tmp_path / "pgd" / "dwell.csv").exists()  # a bound, not a shoulder
    report = make_report(tmp_path)
    assert tmp_path / "shoulder_dwell.png" in report.files
