"""The benchmarks time the package's own loop: the timing wrapper counts what the loop does
and changes nothing it computes; the CP-Flow benchmark runs end to end on a small setting."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from icnn_bench.loop import OneSeed, SeedRun, train_loop
from icnn_bench.runner import prepare
from icnn_bench.timing import TimedStepper, quartiles

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _loop(job, stepper, steps: int, eval_every: int) -> SeedRun:
    settings = replace(job.settings, steps=steps, eval_every=eval_every, checkpoint_every=None)
    run = SeedRun(job.model, job.split, settings, job.seed, [], job.evaluation_pool())
    train_loop([run], stepper, settings)
    return run


@pytest.mark.parametrize("method", ["pgd", "lift"])
def test_the_timed_loop_counts_steps_and_evaluations_and_computes_the_same(
    tiny_config, tmp_path, method
):
    plain_job = prepare(tiny_config(method), tmp_path / "plain")
    plain = _loop(plain_job, OneSeed(plain_job.model, plain_job.settings), 12, 5)
    timed_job = prepare(tiny_config(method), tmp_path / "timed")
    timer = TimedStepper(OneSeed(timed_job.model, timed_job.settings))
    timed = _loop(timed_job, timer, 12, 5)
    assert torch.equal(plain.state.losses, timed.state.losses)  # the same trajectory
    assert len(timer.step_s) == len(timer.backward_s) == 12
    assert len(timer.eval_s) == 3  # steps 5, 10 and the last; step 0's is before any step
    assert all(0 < b < s for b, s in zip(timer.backward_s, timer.step_s, strict=True))
    timer.clear()
    _loop(timed_job, timer, 4, 4)  # a second loop on the same stepper: its own counts
    assert (len(timer.step_s), len(timer.eval_s)) == (4, 1)


def test_quartiles_of_a_known_list():
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)


def test_the_bench_script_times_the_loop_it_imports(tiny_config, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench

    one = bench.Timed(prepare(tiny_config("softplus"), tmp_path / "run"))
    one.steps(6)
    one.steps(6)
    assert len(one.step_ms) == 12 and len(one.eval_ms) == 2
    assert isinstance(one.stepper, TimedStepper) and isinstance(one.stepper.inner, OneSeed)


def test_the_cpflow_benchmark_runs_on_a_small_setting(tmp_path):
    out = tmp_path / "bench_cpflow.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_cpflow.py"), "--steps-warmup", "5", "--repeats",
         "2", "--batch", "64", "--depth", "3", "--methods", "pgd", "--out", str(out)],
        capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out.with_suffix(".csv"))
    assert {"cg", "exact, naive torch.func", "exact chunked, method=pgd"} <= set(frame.route)
    assert "relative difference" in out.read_text()  # the naive loss agreed with the model's


def test_a_whole_bench_run_times_every_evaluation_and_computes_the_same(
    tiny_config, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench

    plain_job = prepare(tiny_config("pgd"), tmp_path / "plain")
    _loop(plain_job, OneSeed(plain_job.model, plain_job.settings), 12, 5)
    job = prepare(tiny_config("pgd"), tmp_path / "whole")
    wall, spent, evaluations = bench._whole_run(job, 12, 5)
    assert evaluations == 4  # steps 0, 5, 10 and the last
    assert 0 < spent < wall
    pairs = zip(job.model.parameters(), plain_job.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)  # the same run, every parameter


def test_the_icnn_work_of_a_step_counts_each_estimators_points(tiny_config, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench

    exact = bench.icnn_points(prepare(tiny_config("pgd"), tmp_path / "exact"), 0.0)
    assert exact == {"batch": 3 * 64, "log_z": 3 * 128, "sampler": 0.0}
    sampler = {"estimator": "learned_sampler", "train_samples": 100, "kl_samples": 30}
    job = prepare(tiny_config("pgd", log_z=sampler), tmp_path / "authors")
    assert bench.icnn_points(job, 2.0) == {"batch": 192, "log_z": 300, "sampler": 2 * 230}
