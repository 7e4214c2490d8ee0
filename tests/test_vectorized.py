"""Seed-vectorised training: one batched model, the same per-seed results as separate runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from icnn_bench.loop import SeedRun, StackedSeeds, train_loop
from icnn_bench.runner import prepare, run, run_seeds, seed_config, use_vectorized
from icnn_bench.sinks.base import Sink

SEEDS = [0, 1, 2]


def cell(tiny_config, method: str, **sections) -> dict:
    trainer = sections.pop("trainer", {})
    config = tiny_config(method, **sections)
    config["trainer"].update(steps=40, eval_every=10, lr=1e-3, **trainer)
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


def test_resume_never_redoes_the_finished_seeds_of_a_cell(tiny_config, tmp_path):
    config = cell(tiny_config, "pgd")
    run_seeds(config, tmp_path)
    stamp = (tmp_path / "seed1" / "result.json").stat().st_mtime_ns
    config["trainer"]["resume"] = "never"
    again = run_seeds(config, tmp_path)
    assert [r["status"] for r in again] == ["ok"] * len(SEEDS)
    assert (tmp_path / "seed1" / "result.json").stat().st_mtime_ns != stamp  # redone
    assert all("resumed_from_step" not in r for r in again)


class _InterruptAt(Sink):
    def __init__(self, step: int) -> None:
        self.step = step

    def log_eval(self, row: dict) -> None:
        if row["step"] == self.step:
            raise KeyboardInterrupt


def _comparable(result: dict) -> dict:
    timing = {"wall_s", "train_s", "steps_per_s", "resumed_from_step"}
    return {k: v for k, v in result.items() if k not in timing}


@pytest.mark.parametrize("method", ["softplus", "lift"])
def test_an_interrupted_stacked_cell_resumes_to_the_uninterrupted_result(
    tiny_config, tmp_path, method
):
    config = cell(tiny_config, method, trainer={"checkpoint_every": 15, "probe_every": 20})
    whole = run_seeds(config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run_seeds(config, tmp_path / "cut", lambda cfg, d: [_InterruptAt(30)])
    assert (tmp_path / "cut" / "checkpoint.pt").exists()  # the cell's, in the job folder
    for seed in SEEDS:
        stopped = json.loads((tmp_path / "cut" / f"seed{seed}" / "result.json").read_text())
        assert stopped["status"] == "interrupted" and "from step 15" in stopped["error"]
    resumed = run_seeds(config, tmp_path / "cut")
    for a, b, seed in zip(whole, resumed, SEEDS, strict=True):
        assert b["resumed_from_step"] == 15
        assert _comparable(a) == _comparable(b)
        for name in ("metrics.csv", "train_loss.csv"):
            pd.testing.assert_frame_equal(
                pd.read_csv(tmp_path / "whole" / f"seed{seed}" / name),
                pd.read_csv(tmp_path / "cut" / f"seed{seed}" / name),
            )
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()


def test_skip_step_in_a_stacked_cell_holds_back_only_the_bad_seed(
    tiny_config, tmp_path, monkeypatch
):
    config = cell(tiny_config, "softplus", trainer={"nan_policy": "skip_step"})
    clean = run_seeds(config, tmp_path / "clean")
    drawn = {"n": 0}
    original = SeedRun.next_batch

    def poisoned(self):
        batch = original(self)
        drawn["n"] += 1
        if self.seed == 1 and drawn["n"] == 3 * 5 + 2:  # step 6, seed 1 (seeds draw in order)
            batch = torch.full_like(batch, math.nan)
        return batch

    monkeypatch.setattr(SeedRun, "next_batch", poisoned)
    hit = run_seeds(config, tmp_path / "hit")
    assert [r["skipped_steps"] for r in hit] == [0, 1, 0]
    assert all(r["status"] == "ok" for r in hit)
    for seed in (0, 2):  # the others' updates are untouched by seed 1's skipped one
        assert _comparable(hit[seed]) == _comparable(clean[seed])
    assert hit[1]["test_nll"] != clean[1]["test_nll"]


KILL_SCRIPT = """
import json, sys
from icnn_bench.runner import run_seeds
run_seeds(json.loads(sys.argv[1]), sys.argv[2])
"""


def test_a_sigkilled_stacked_cell_resumes_bit_identical(tiny_config, tmp_path):
    config = cell(tiny_config, "softplus")
    config["model"]["width"] = 16
    config["trainer"].update(steps=800, eval_every=50, checkpoint_every=50)
    config["data"]["n_train"] = 2000
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def command(folder: Path) -> list[str]:
        return [sys.executable, "-c", KILL_SCRIPT, json.dumps(config), str(folder)]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), env=env)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("the cell ended before its first checkpoint")
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "seed0" / "result.json").exists(), "finished before it was killed"
    subprocess.run(command(killed), env=env, check=True)
    subprocess.run(command(tmp_path / "whole"), env=env, check=True)
    for seed in SEEDS:
        a, b = (
            json.loads((d / f"seed{seed}" / "result.json").read_text())
            for d in (killed, tmp_path / "whole")
        )
        assert a["resumed_from_step"] >= 50
        assert _comparable(a) == _comparable(b)
        for name in ("metrics.csv", "train_loss.csv"):
            pd.testing.assert_frame_equal(
                pd.read_csv(killed / f"seed{seed}" / name),
                pd.read_csv(tmp_path / "whole" / f"seed{seed}" / name),
            )
