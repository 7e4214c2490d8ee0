"""Seed-vectorised training: one batched model, the same per-seed results as separate runs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from icnn_bench.runner import prepare, run
from icnn_bench.loop import SeedRun, StackedSeeds, train_loop
from icnn_bench.runner import run_seeds, seed_config, use_vectorized

SEEDS = [0, 1, 2]


def cell(tiny_config, method: str, **sections) -> dict:
    config = tiny_config(method, **sections)
    config["trainer"].update(steps=40, eval_every=10, lr=1e-3)
    config["seeds"] = list(SEEDS)
    config["trainer"]["vectorize"] = True
    return config


@pytest.mark.parametrize("method", ["pgd", "softplus", "lift", "lift_nocond"])
def test_vectorised_seeds_match_sequential_runs(tiny_config, tmp_path, method):
    config = cell(tiny_config, method)
    if method == "lift_nocond":
        config["method"].update(tiny_config("lift")["method"], name=method, condition="constant")
    batched = run_seeds(config, tmp_path / "batched")
    for seed, result in zip(SEEDS, batched, strict=True):
        alone = run(seed_config(config, seed), tmp_path / f"alone{seed}")
        assert result["status"] == alone["status"] == "ok", result["error"]
        assert result["vectorized_seeds"] == len(SEEDS) and "vectorized_seeds" not in alone
        folder = tmp_path / "batched" / f"seed{seed}"
        assert json.loads((folder / "result.json").read_text())["seed"] == seed
        for name, column in (("metrics.csv", "val_nll"), ("train_loss.csv", "train_loss")):
            a = pd.read_csv(folder / name)[column]
            b = pd.read_csv(tmp_path / f"alone{seed}" / name)[column]
            assert len(a) == len(b)
            torch.testing.assert_close(
                torch.tensor(a.to_numpy()), torch.tensor(b.to_numpy()), rtol=1e-4, atol=1e-5
            )
        assert result["test_nll"] == pytest.approx(alone["test_nll"], abs=1e-4)
        assert result["kl"] == pytest.approx(alone["kl"], abs=1e-4)
    assert batched[0]["test_nll"] != batched[1]["test_nll"]  # seeds differ (own data, init)


def test_one_diverging_seed_stops_alone(tiny_config, tmp_path):
    config = cell(tiny_config, "softplus")
    jobs = [prepare(seed_config(config, s), tmp_path) for s in SEEDS]
    with torch.no_grad():
        jobs[1].model.method.params["W1"][0, 0] = math.inf
    settings = jobs[0].settings
    runs = [SeedRun(j.model, j.split, settings, j.seed, []) for j in jobs]
    outcomes = train_loop(runs, StackedSeeds([j.model for j in jobs], settings), settings)
    assert outcomes[1].status == "diverged" and outcomes[1].diverged_step == 1
    assert outcomes[1].error.startswith("non-finite parameters")
    assert outcomes[0].status == outcomes[2].status == "ok"
    assert outcomes[0].steps == 40


def test_cells_it_cannot_batch_fail_in_one_line_when_asked_and_fall_back_on_auto(
    tiny_config, tmp_path
):
    importance = {"estimator": "importance", "train_samples": 64, "eval_samples": 256}
    config = cell(tiny_config, "pgd", log_z=importance)
    for result in run_seeds(config, tmp_path / "asked"):
        assert result["status"] == "failed"
        assert "deterministic log Z" in result["error"] and "\n" not in result["error"]
    config["trainer"]["vectorize"] = "auto"
    results = run_seeds(config, tmp_path / "auto")
    assert [r["status"] for r in results] == ["ok"] * len(SEEDS)
    assert all("vectorized_seeds" not in r for r in results)


def test_auto_batches_on_cpu_only_where_it_measured_faster(tiny_config):
    if torch.cuda.is_available():
        pytest.skip("on a GPU auto batches every cell")
    config = cell(tiny_config, "softplus")
    config["trainer"]["vectorize"] = "auto"
    assert use_vectorized(config)
    config["method"]["name"] = "lift"
    assert not use_vectorized(config)
    config["trainer"]["vectorize"] = "sometimes"
    with pytest.raises(ValueError, match=r"trainer.vectorize='sometimes'; choose one of"):
        use_vectorized(config)


def test_a_seeds_cell_keeps_finished_seeds(tiny_config, tmp_path):
    config = cell(tiny_config, "pgd")
    first = run_seeds(config, tmp_path)
    stamp = (tmp_path / "seed1" / "result.json").stat().st_mtime_ns
    again = run_seeds(config, tmp_path)
    assert [r["test_nll"] for r in again] == [r["test_nll"] for r in first]
    assert (tmp_path / "seed1" / "result.json").stat().st_mtime_ns == stamp
