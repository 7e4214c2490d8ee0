"""One run end to end through plain Python: files written, failures recorded, load_run works."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from icnn_bench import load_run
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.runner import run


def read_result(run_dir):
    return json.loads((run_dir / "result.json").read_text())


@pytest.mark.parametrize("method", ["pgd", "softplus", "lift"])
def test_a_run_writes_the_run_folder_contract(tiny_config, tmp_path, method):
    result = run(tiny_config(method), tmp_path)
    assert result["status"] == "ok", result.get("error")
    on_disk = read_result(tmp_path)
    for key in (
        "target",
        "model",
        "method",
        "seed",
        "status",
        "test_nll",
        "kl",
        "tv",
        "hellinger",
        "kl_mc",
        "entropy",
        "steps",
        "wall_s",
        "steps_per_s",
    ):
        assert key in on_disk, key
    assert on_disk["method"] == method and on_disk["steps"] == 20
    assert on_disk["kl_mc"] == pytest.approx(on_disk["test_nll"] - on_disk["entropy"])
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["step"]) == [0, 10, 20]
    assert {"train_loss", "val_nll", "dead_frac", "grad_norm"} <= set(metrics.columns)
    assert metrics["val_nll"].notna().all()
    losses = pd.read_csv(tmp_path / "train_loss.csv")
    assert list(losses["step"]) == list(range(1, 21))
    for name in ("config.yaml", "weights.pt", "density.csv"):
        assert (tmp_path / name).exists(), name


def test_load_run_gives_a_normalised_model(tiny_config, tmp_path):
    result = run(tiny_config("lift"), tmp_path)
    model = load_run(tmp_path)
    assert isinstance(model.model, EnergyModel)
    x = torch.linspace(-7, 7, 20_001).reshape(-1, 1)
    mass = float(model.log_prob(x).exp().sum() * (14 / 20_000))
    assert mass == pytest.approx(1.0, abs=1e-3)
    assert model.energy(torch.zeros(5, 1)).shape == (5,)
    # the loaded model reproduces the run's own test NLL on the same data
    from icnn_bench.targets import build_target

    test = build_target("gaussian").split(0, 600, 200, 400).test
    assert float(-model.log_prob(test).mean()) == pytest.approx(result["test_nll"], abs=1e-5)


def test_load_run_refuses_a_folder_without_weights(tiny_config, tmp_path):
    run(tiny_config(model={"width": 0}), tmp_path)
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        load_run(tmp_path)


def test_same_seed_same_results_and_seeds_differ(tiny_config, tmp_path):
    first = run(tiny_config("lift"), tmp_path / "a")
    second = run(tiny_config("lift"), tmp_path / "b")
    other = run(tiny_config("lift", seed=1, data={"seed": 1}), tmp_path / "c")
    assert first["test_nll"] == second["test_nll"]
    assert first["kl"] == second["kl"]
    assert other["test_nll"] != first["test_nll"]


def test_non_finite_loss_is_recorded_as_diverged_with_its_step(tiny_config, tmp_path, monkeypatch):
    original = EnergyModel.loss
    calls = {"n": 0}

    def explode_at_step_13(self, batch):
        calls["n"] += 1
        loss = original(self, batch)
        return loss * math.nan if calls["n"] == 13 else loss

    monkeypatch.setattr(EnergyModel, "loss", explode_at_step_13)
    result = run(tiny_config("softplus"), tmp_path)
    assert result["status"] == "diverged"
    assert result["diverged_step"] == 13
    assert result["steps"] == 12
    assert "non-finite loss" in result["error"]
    on_disk = read_result(tmp_path)
    assert on_disk["status"] == "diverged" and on_disk["test_nll"] is None
    # the curve up to the last finite step is kept
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == [0, 10, 12]


def _nan_losses_at(monkeypatch, steps: set[int]) -> None:
    original = EnergyModel.loss
    calls = {"n": 0}

    def nan_at(self, batch):
        calls["n"] += 1
        loss = original(self, batch)
        return loss * math.nan if calls["n"] in steps else loss

    monkeypatch.setattr(EnergyModel, "loss", nan_at)


def test_skip_step_policy_skips_and_counts_non_finite_steps(tiny_config, tmp_path, monkeypatch):
    _nan_losses_at(monkeypatch, {5, 7})
    result = run(tiny_config("lift", trainer={"nan_policy": "skip_step"}), tmp_path)
    assert result["status"] == "ok", result["error"]
    assert result["skipped_steps"] == 2 and result["steps"] == 20
    losses = pd.read_csv(tmp_path / "train_loss.csv")
    assert losses["train_loss"].isna().tolist() == [s in (5, 7) for s in range(1, 21)]
    assert pd.read_csv(tmp_path / "metrics.csv")["train_loss"].notna().iloc[1:].all()


def test_skip_step_gives_up_when_every_step_is_non_finite(tiny_config, tmp_path, monkeypatch):
    _nan_losses_at(monkeypatch, set(range(3, 10_000)))
    config = tiny_config("pgd", trainer={"nan_policy": "skip_step", "steps": 80})
    result = run(config, tmp_path)
    assert result["status"] == "diverged"
    assert result["error"] == "non-finite loss (50 steps in a row)"
    assert result["diverged_step"] == 52 and result["skipped_steps"] == 49


def test_non_finite_emitted_weights_are_named_as_the_cause(tiny_config, tmp_path, monkeypatch):
    from icnn_bench.methods.lift import LiftWeights

    original = LiftWeights._emit_from_summary

    def overflowing(self, summary):  # e.g. a readout row times the summary overflows float32
        params = original(self, summary)
        return {**params, "W2": params["W2"] * math.inf}

    monkeypatch.setattr(LiftWeights, "_emit_from_summary", overflowing)
    result = run(tiny_config("lift"), tmp_path)
    assert result["status"] == "diverged" and result["diverged_step"] == 1
    assert result["error"] == "non-finite emitted weights (lift: W2)"
    assert list(pd.read_csv(tmp_path / "metrics.csv")["step"]) == [0]


def test_non_finite_parameters_stop_even_under_skip_step(tiny_config, tmp_path, monkeypatch):
    import icnn_bench.runner as train_module

    build = train_module.model_from_config

    def broken(*args, **kwargs):
        model = build(*args, **kwargs)
        with torch.no_grad():
            model.method.params["W1"][0, 0] = math.inf
        return model

    monkeypatch.setattr(train_module, "model_from_config", broken)
    result = run(tiny_config("softplus", trainer={"nan_policy": "skip_step"}), tmp_path)
    assert result["status"] == "diverged"
    assert result["error"].startswith("non-finite parameters (method.params.W1)")


@pytest.mark.parametrize(
    "sections,message",
    [
        ({"trainer": {"batch_size": 5000}}, "trainer.batch_size=5000 is larger than"),
        ({"model": {"width": -3}}, "model.width=-3 must be a positive integer"),
        ({"model": {"depth": 0}}, "model.depth=0 must be a positive integer"),
        ({"trainer": {"lr": 0}}, "trainer.lr=0 must be a positive number"),
        ({"target": {"name": "skewnormal", "params": {"scale": 0}}}, "scale=0"),
        ({"device": "tpu"}, "device='tpu'; choose one of: auto, cpu, cuda"),
        ({"model": {"init": "xavier"}}, "unknown model.init='xavier'"),
    ],
)
def test_bad_config_fails_with_one_line_and_a_result(tiny_config, tmp_path, sections, message):
    result = run(tiny_config(**sections), tmp_path)
    assert result["status"] == "failed"
    assert message in result["error"]
    assert "\n" not in result["error"]
    assert read_result(tmp_path)["error"] == result["error"]
    assert not (tmp_path / "error.txt").exists()  # a config error needs no traceback


def test_unexpected_errors_keep_their_traceback_in_the_run_folder(
    tiny_config, tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("icnn_bench.runner.train_loop", broken)
    result = run(tiny_config(), tmp_path)
    assert result["status"] == "failed"
    assert "RuntimeError: boom" in result["error"]
    assert "boom" in (tmp_path / "error.txt").read_text()


@pytest.mark.parametrize(
    ("build", "says"),
    [(None, "this torch build (2"), ("12.4", "this machine has no CUDA device")],
    ids=["cpu-only-torch", "cuda-torch-no-gpu"],
)
def test_cuda_without_a_gpu_says_which_is_missing(tiny_config, tmp_path, monkeypatch, build, says):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setattr(torch.version, "cuda", build)
    result = run(tiny_config(device="cuda"), tmp_path)
    assert result["status"] == "failed"
    assert says in result["error"] and "use device=cpu" in result["error"]
    assert not (tmp_path / "weights.pt").exists()


@pytest.mark.parametrize("scale", [1e-3, 10.0, math.inf])
def test_clipping_equals_torch_clip_grad_norm_bit_for_bit(scale):
    from icnn_bench.loop import clip_gradients

    generator = torch.Generator().manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(40, 30, generator=generator)) for _ in range(3)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for mine, reference in zip(ours, theirs, strict=True):
        grad = torch.randn(mine.shape, generator=generator) * scale
        mine.grad, reference.grad = grad.clone(), grad.clone()
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=True)
    total = clip_gradients(ours, 1.0)
    torch.testing.assert_close(total, expected, rtol=0, atol=0, equal_nan=True)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine.grad, reference.grad, rtol=0, atol=0, equal_nan=True)


def test_a_run_shorter_than_its_evaluation_cadence_evaluates_at_its_end(tiny_config, tmp_path):
    result = run(tiny_config(trainer={"eval_every": 50}), tmp_path)
    assert result["status"] == "ok"
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [0, 20]
