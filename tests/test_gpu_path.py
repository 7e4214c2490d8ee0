"""The GPU-cluster path, checked without a GPU: a GPU sweep submitted from a machine without
CUDA (through stand-in SLURM commands), checkpoints that resume on another device, batches
and draws that are the same on every device, random streams a probe leaves alone, stacked
seeds' weights saved one seed each, and load_run on a device with a pinned emission."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from test_cli import icnn_bench

from icnn_bench import devices
from icnn_bench.api import load_run
from icnn_bench.errors import ConfigError
from icnn_bench.loop import SeedRun
from icnn_bench.run_folder import CHECKPOINT
from icnn_bench.runner import run, run_seeds
from icnn_bench.sinks.base import Sink
from icnn_bench.targets import Split

STANDIN = Path(__file__).parent / "slurm_standin"


def test_a_gpu_sweep_is_submitted_from_a_machine_without_cuda(tmp_path):
    """The login node has no GPU: submission must not check CUDA; each job checks its own
    machine (here the stand-in runs the jobs on this CPU machine, so they say so)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sweep = tmp_path / "sweep"
    env = {"PATH": f"{STANDIN}{os.pathsep}{os.environ['PATH']}"}
    done = icnn_bench(
        "experiment=paper_1d_gpu", "hydra/launcher=slurm_gpu", "target=gumbel", "method=pgd",
        "seeds=[0,1]", "trainer.steps=4", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert not any(line.startswith("icnn-bench: device=cuda") for line in lines), done.stderr
    submitted = (sweep / ".submitit" / "sbatch.log").read_text()
    assert "#SBATCH --gpus-per-node=1" in submitted
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/seed*/result.json"))]
    assert [r["seed"] for r in results] == [0, 1]
    for result in results:  # the job's own machine has no CUDA: recorded, in one line
        assert result["status"] == "failed" and "device=cuda" in result["error"]
    assert done.returncode == 1 and "2 of 2 runs failed" in done.stderr


def test_the_sweep_preflight_checks_the_device_only_where_jobs_run_here():
    from icnn_bench.command_line import jobs_run_elsewhere
    from icnn_bench.runner import preflight

    config = _composed(["experiment=paper_1d_gpu", "target=gumbel", "method=pgd"])
    assert config["device"] == "cuda"
    preflight(config, on_this_machine=False)  # a cluster's nodes check their own device
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda"):
            preflight(config, on_this_machine=True)
    slurm = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}
    assert jobs_run_elsewhere(slurm)
    assert not jobs_run_elsewhere({"_target_": "hydra._internal.core_plugins.BasicLauncher"})


def _composed(overrides: list[str]) -> dict:
    from icnn_bench.compose import compose

    return compose(overrides)


@pytest.mark.parametrize("name", ["cuda:x", "gpu", "cuda:", 3])
def test_device_names_are_checked_without_a_gpu(name):
    with pytest.raises(ConfigError, match=r"choose one of: auto, cpu, cuda, cuda:N"):
        devices.check_device_name(name)
    assert devices.check_device_name("cuda:1") == "cuda:1"


def test_cuda_1_on_a_machine_with_one_gpu_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"device=cuda:1 but this machine has 1 CUDA device"):
        devices.resolve_device("cuda:1")


# ---------------------------------------------------------------- resume across devices


class FailAt(Sink):
    """Raises `error` after the evaluation of `step` (e.g. a GPU out of memory)."""

    def __init__(self, step: int, error: Exception) -> None:
        self.step, self.error = step, error

    def log_eval(self, row: dict[str, float]) -> None:
        if row["step"] == self.step:
            raise self.error


def _generator_states(state: object) -> list[torch.Tensor]:
    """Every random-stream state in a checkpoint (byte tensors)."""
    if isinstance(state, dict):
        keys = ("batches", "probes", "model_rng")
        found = [v for k, v in state.items() if k in ("batches", "probes")]
        for key, value in state.items():
            if key == "model_rng":
                found += list(value.values())
            elif key not in keys:
                found += _generator_states(value)
        return found
    if isinstance(state, list):
        return [s for item in state for s in _generator_states(item)]
    return []


def test_a_failure_keeps_the_checkpoint_and_a_checkpoint_resumes_on_another_device(
    tiny_config, tmp_path, capsys
):
    importance = {"estimator": "importance", "train_samples": 64, "eval_samples": 256}
    config = tiny_config(
        "softplus",
        target={"name": "correlated_gaussian", "params": {"dim": 2, "rho": 0.5}},
        log_z=importance,
        trainer={"steps": 40, "eval_every": 10, "checkpoint_every": 15, "probe_every": 10,
                 "probe_batches": 3},
    )  # fmt: skip
    whole = run(config, tmp_path / "whole")
    assert whole["status"] == "ok"

    cut = tmp_path / "cut"
    failed = run(config, cut, sinks=[FailAt(20, RuntimeError("CUDA out of memory"))])
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    assert (cut / CHECKPOINT).exists(), "a failure must keep the checkpoint it can resume from"
    assert "checkpoint of step 15 kept" in capsys.readouterr().out

    # every stream in the checkpoint is the CPU's, whatever the device: it resumes anywhere
    saved = torch.load(cut / CHECKPOINT, weights_only=False)
    cpu_state = torch.Generator().get_state()
    states = _generator_states(saved["seeds"])
    assert len(states) >= 3
    assert all(s.dtype == cpu_state.dtype and s.shape == cpu_state.shape for s in states)
    saved["device"] = "cuda:0"  # as if the first attempt ran on a GPU
    torch.save(saved, cut / CHECKPOINT)

    resumed = run(config, cut)
    assert "written on cuda:0 on cpu" in capsys.readouterr().out
    assert resumed["resumed_from_step"] == 15
    for key in ("test_nll", "kl", "val_nll"):
        assert resumed[key] == whole[key]


def test_batches_are_drawn_on_the_cpu_whatever_the_data_device(monkeypatch):
    from icnn_bench import loop
    from icnn_bench.build import TrainerSettings

    settings = TrainerSettings(steps=3, batch_size=8)
    drawn: dict[str, list[torch.Tensor]] = {"cpu": [], "meta": []}

    def recording(where):
        def to_device(tensor, device):
            drawn[where].append(tensor.clone())
            return tensor.to(device)

        return to_device

    data = torch.randn(50, 2)
    for where in ("cpu", "meta"):
        monkeypatch.setattr(loop, "to_device", recording(where))
        split = Split(*(data.to(where) for _ in range(3)))
        seed_run = SeedRun(torch.nn.Linear(1, 1), split, settings, seed=4, sinks=[])
        assert seed_run.batches.device.type == "cpu"
        for _ in range(3):
            assert seed_run.next_batch().device.type == where
    assert len(drawn["cpu"]) == 3
    for mine, theirs in zip(drawn["cpu"], drawn["meta"], strict=True):
        assert torch.equal(mine, theirs)


def test_the_global_streams_are_forked_on_every_cuda_device_in_use(monkeypatch):
    forked = []

    class Fork:
        def __init__(self, devices):
            forked.append(list(devices))

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(torch.random, "fork_rng", lambda devices: Fork(devices))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with devices.isolated_global_rng():
        pass
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    with devices.isolated_global_rng():
        pass
    assert forked == [[0, 1], []]


def test_no_project_module_forks_only_the_cpu_stream():
    package = Path(devices.__file__).parent
    offenders = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "fork_rng(" in p.read_text() and p.name != "devices.py"
    ]
    assert offenders == []


def test_a_probe_leaves_the_global_and_model_streams_untouched(tiny_config, tmp_path):
    from icnn_bench.loop import probe_row
    from icnn_bench.runner import prepare

    config = tiny_config(
        "lift",
        target={"name": "correlated_gaussian", "params": {"dim": 2, "rho": 0.5}},
        log_z={"estimator": "importance", "proposal": "flow", "flow": {"transforms": 1,
               "hidden": [8]}, "train_samples": 32, "eval_samples": 64},
        trainer={"probe_batches": 3},
    )  # fmt: skip
    job = prepare(config, tmp_path)
    job.model.loss(job.split.train[:32])  # start the model's own streams
    before_global, before_model = torch.get_rng_state(), job.model.rng_states()
    probe_row(job.model, job.split, job.settings, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), before_global)
    after = job.model.rng_states()
    assert after.keys() == before_model.keys()
    assert all(torch.equal(after[k], before_model[k]) for k in after)


def test_deterministic_kernels_hold_during_the_run_only(tiny_config, tmp_path, monkeypatch):
    seen = []

    class Watch(Sink):
        def log_eval(self, row):
            seen.append(torch.are_deterministic_algorithms_enabled())

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert run(tiny_config(deterministic=True), tmp_path, sinks=[Watch()])["status"] == "ok"
    assert seen and all(seen)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == devices.CUBLAS_WORKSPACE
    assert not torch.are_deterministic_algorithms_enabled()
    bad = run(tiny_config(deterministic="yes"), tmp_path / "bad")
    assert bad["status"] == "failed" and "deterministic='yes' must be true or false" in bad["error"]


# ---------------------------------------------------------------- files and the API


def test_stacked_seeds_save_only_their_own_weights(tiny_config, tmp_path):
    config = tiny_config("pgd", model={"width": 48}, trainer={"steps": 4, "vectorize": True})
    single = run({**config, "seed": 0}, tmp_path / "single")
    assert single["status"] == "ok"
    results = run_seeds({**config, "seeds": [0, 1, 2, 3]}, tmp_path / "stacked")
    assert all(r["status"] == "ok" and r["vectorized_seeds"] == 4 for r in results)
    one = (tmp_path / "single" / "weights.pt").stat().st_size
    for seed in range(4):
        size = (tmp_path / "stacked" / f"seed{seed}" / "weights.pt").stat().st_size
        assert size < 1.2 * one, f"seed {seed}: {size} bytes vs {one} for one seed"


def test_load_run_on_a_device_moves_the_pinned_emission(tiny_config, tmp_path):
    assert run(tiny_config("lift"), tmp_path)["status"] == "ok"
    loaded = load_run(tmp_path, device="cpu")
    x = torch.linspace(-2, 2, 9)
    reference = loaded.log_prob(x)
    method = loaded.model.method
    loaded.model.double()  # .to(...) moves the pinned emission with the parameters
    assert all(v.dtype == torch.float64 for v in method.pinned.values())
    assert torch.allclose(loaded.model.log_prob(x[:, None].double()).float(), reference)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device=cuda"):
            load_run(tmp_path, device="cuda")


def test_gpu_check_fails_on_failed_or_non_finite_runs():
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check_script"] = module
    spec.loader.exec_module(module)
    import pandas as pd

    rows = [
        {"target": "gumbel", "method": "pgd", "seed": 0, "test_nll_cuda": 1.0, "kl_cuda": 0.1,
         "status_cuda": "ok", "test_nll_cpu": 1.0, "kl_cpu": 0.1, "status_cpu": "ok"},
        {"target": "gumbel", "method": "lift", "seed": 0, "test_nll_cuda": float("nan"),
         "kl_cuda": None, "status_cuda": "diverged", "test_nll_cpu": 1.0, "kl_cpu": 0.1,
         "status_cpu": "ok"},
    ]  # fmt: skip
    failed = module.failed_runs(pd.DataFrame(rows))
    assert failed and all("gumbel/lift/seed0" in line for line in failed)
    assert module.failed_runs(pd.DataFrame(rows[:1])) == []
