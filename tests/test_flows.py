"""Convex-potential flows through the runner: normalised densities for every method, the
chunked exact gradient, the stochastic log-det against the exact one, inversion, the
reference MAF, and one-line errors for impossible settings."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
from torch.func import grad, hessian, vmap

from icnn_bench import load_run
from icnn_bench.build import model_from_config
from icnn_bench.errors import ConfigError
from icnn_bench.log_z.quadrature import midpoint_grid
from icnn_bench.models import potential
from icnn_bench.models.icnn import ICNNSpec, init_params
from icnn_bench.models.logdet import draw_probe, stochastic_log_det
from icnn_bench.models.potential import InversionError
from icnn_bench.runner import run
from icnn_bench.targets import build_target

METHODS = ["pgd", "softplus", "lift"]
LIFT_OPTIONS = {"body": [16, 16, 24], "pool_norm": True, "slack_init": -2.0, "emit": "all"}

FLOW_2D = {
    "seed": 0,
    "device": "cpu",
    "data": {"n_train": 2000, "n_val": 300, "n_test": 500, "seed": 0},
    "target": {"name": "eight_gaussians", "params": {}},
    "model": {"name": "cpflow", "width": 16, "depth": 3, "alpha": 0.0, "normalise_positive": True},
    "method": {"name": "pgd"},
    "trainer": {"steps": 60, "batch_size": 128, "lr": 5e-3, "grad_clip": None, "eval_every": 30},
}


def flow_config(method: str, **model) -> dict:
    config = copy.deepcopy(FLOW_2D)
    config["method"] = {"name": method, **(LIFT_OPTIONS if method == "lift" else {})}
    config["model"].update(model)
    return config


class _Dim:
    def __init__(self, dim: int) -> None:
        self.dim = dim


@pytest.mark.parametrize("method", METHODS)
def test_trained_2d_flow_integrates_to_one_for_every_method(tmp_path, method):
    result = run(flow_config(method), tmp_path)
    assert result["status"] == "ok", result.get("error")
    assert result["steps"] == 60 and result["method"] == method
    model = load_run(tmp_path)
    nodes, log_cell = midpoint_grid([(-7.0, 7.0)] * 2, 300 * 300)
    mass = float(model.log_prob(nodes).double().exp().sum() * math.exp(log_cell))
    assert mass == pytest.approx(1.0, abs=0.01)
    assert result["grid_mass"] == pytest.approx(1.0, abs=0.01)
    density = pd.read_csv(tmp_path / "density.csv")
    assert {"x", "y", "model", "target"} <= set(density.columns)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["step"]) == [0, 30, 60] and metrics["val_nll"].notna().all()


def test_reference_maf_runs_and_is_labelled_by_its_name(tmp_path):
    config = flow_config("lift")
    config["model"] = {"name": "maf_reference", "transforms": 2, "hidden": [16, 16]}
    result = run(config, tmp_path)
    assert result["status"] == "ok", result.get("error")
    assert result["model"] == result["method"] == "maf_reference"
    assert math.isnan(result["dead_frac"])  # no constrained weights
    assert json.loads((tmp_path / "result.json").read_text())["test_bits_per_dim"] > 0
    model = load_run(tmp_path)
    x = torch.tensor([[0.2, -0.1], [1.0, 0.5]])
    assert model.log_prob(torch.zeros(3, 2)).shape == (3,)
    score, eps = model.score(x), 1e-2
    step = torch.tensor([eps, 0.0])
    numeric = (model.log_prob(x + step) - model.log_prob(x - step)) / (2 * eps)
    torch.testing.assert_close(score[:, 0], numeric, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("method", METHODS)
def test_chunked_exact_gradient_equals_the_whole_batch_gradient(method):
    def grads(chunk: int) -> list[torch.Tensor]:
        config = flow_config(method, blocks=2, train_chunk=chunk)
        train = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
        model = model_from_config(config, _Dim(2), seed=3, train=train)
        batch = torch.randn(96, 2, generator=torch.Generator().manual_seed(1))
        loss = model.loss_backward(batch)
        return [loss] + [p.grad.clone() for p in model.trainable_parameters()]

    whole, chunked = grads(chunk=4096), grads(chunk=32)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.fixture
def potential_setup():
    spec = ICNNSpec(dim=5, width=12, depth=3, alpha=0.0, normalise_positive=True)
    params = init_params(spec, "folded_normal", torch.Generator().manual_seed(0))
    params = {k: v.double().requires_grad_(True) for k, v in params.items()}
    w0 = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    w1 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return spec, params, w0, w1, x


def test_structured_hessian_with_normalised_sums_equals_torch_func(potential_setup):
    spec, params, w0, w1, x = potential_setup

    def one(v):
        return potential.potential(params, v[None], spec, w0, w1)[0]

    y, hess = potential.gradient_and_hessian(params, x, spec, w0, w1)
    torch.testing.assert_close(hess, vmap(hessian(one))(x))
    torch.testing.assert_close(y, vmap(grad(one))(x))


def test_stochastic_log_det_agrees_with_exact_within_its_error_bar(potential_setup):
    spec, params, w0, w1, x = potential_setup
    exact = potential.cholesky_log_det(potential.gradient_and_hessian(params, x, spec, w0, w1)[1])
    exact_grad = torch.autograd.grad(exact.sum(), [w1, params["W1"]])
    probes = 4000
    xs = x.repeat(probes, 1).requires_grad_(True)
    y = potential.potential_gradient(params, xs, spec, w0, w1)
    probe = draw_probe(tuple(xs.shape), "rademacher", torch.Generator().manual_seed(5), xs)
    estimate = stochastic_log_det(y, xs, probe, max_iters=10, rtol=1e-10)
    values = estimate.value.reshape(probes, 3)
    se = values.std(0) / math.sqrt(probes)
    assert bool(((values.mean(0) - exact.detach()).abs() < 4 * se + 1e-9).all())
    assert bool((se > 0).all())  # a real estimate, not the exact value in disguise
    # the surrogate's gradient is the Hutchinson estimate of the log-det gradient
    surrogate_grad = torch.autograd.grad(estimate.surrogate.sum() / probes, [w1, params["W1"]])
    for est, ref in zip(surrogate_grad, exact_grad, strict=True):
        assert float((est - ref).norm() / ref.norm()) < 0.1


def test_stacked_flow_inverse_recovers_the_input():
    config = flow_config("softplus", blocks=2)
    model = model_from_config(config, _Dim(2), seed=0, train=3 * torch.randn(512, 2))
    model.pin(torch.randn(64, 2))
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    torch.testing.assert_close(model.inverse(model.transform(x)), x, atol=1e-4, rtol=0)


def test_failed_inversion_is_reported_not_hung():
    spec = ICNNSpec(dim=2, width=8, depth=2, alpha=0.0)
    params = init_params(spec, "folded_normal", torch.Generator().manual_seed(0))
    w0, w1 = torch.tensor(-6.0), torch.tensor(3.0)  # nearly flat quadratic, strong ICNN
    y = 50 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InversionError, match=r"did not converge in 1 Newton steps"):
        potential.inverse(params, y, spec, w0, w1, steps=1)


def test_exact_log_det_refuses_a_dimension_too_large_with_the_remedy():
    config = flow_config("pgd", log_det="exact", max_exact_dim=8)
    with pytest.raises(ConfigError, match=r"model\.log_det=stochastic"):
        model_from_config(config, _Dim(9), seed=0)
    auto = model_from_config(flow_config("pgd", max_exact_dim=8), _Dim(9), seed=0)
    assert auto.train_log_det == "stochastic" and auto.eval_log_det == "stochastic"


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("log_det", "cholesky", "model.log_det"),
        ("probe", "uniform", "model.probe"),
        ("blocks", 0, "model.blocks"),
        ("train_chunk", 0, "model.train_chunk"),
    ],
)
def test_bad_flow_settings_fail_in_one_line(tmp_path, key, value, needle):
    result = run(flow_config("pgd", **{key: value}), tmp_path)
    assert result["status"] == "failed" and needle in result["error"]
    assert "\n" not in result["error"]


def test_stochastic_training_run_on_a_higher_dimensional_target(tmp_path):
    config = flow_config("lift", log_det="stochastic")
    config["target"] = {"name": "tabular21", "params": {}}
    config["trainer"].update(steps=4, eval_every=2, batch_size=64)
    result = run(config, tmp_path)
    assert result["status"] == "ok", result.get("error")
    assert result["log_det"] == "exact"  # evaluation stays exact at d <= max_exact_dim
    assert result["kl_mc"] == pytest.approx(
        result["test_nll"] - build_target("tabular21").entropy()
    )


def test_report_of_a_2d_flow_sweep_draws_heatmaps_next_to_the_data(tmp_path):
    from icnn_bench.report import make_report

    for method in ("softplus", "maf_reference"):
        config = flow_config(method)
        config["trainer"].update(steps=10, eval_every=5)
        if method == "maf_reference":
            config["model"] = {"name": "maf_reference", "transforms": 2, "hidden": [16, 16]}
        assert run(config, tmp_path / method)["status"] == "ok"
    density = pd.read_csv(tmp_path / "softplus" / "density.csv")
    xs, ys = sorted(density["x"].unique()), sorted(density["y"].unique())
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    # the data column is the training split's histogram as a density: mass 1 inside the box
    assert float(density["data"].sum() * cell) == pytest.approx(1.0, abs=0.01)
    report = make_report(tmp_path)
    assert (tmp_path / "densities_2d.png") in report.files
    header = report.table_markdown.split("## Test NLL")[1].splitlines()[2]
    assert header.split("|")[2:4] == [" softplus ", " maf_reference "]
