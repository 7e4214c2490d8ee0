"""Checkpoints and resume, determinism, interrupted and refused run folders."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from icnn_bench.errors import ConfigError
from icnn_bench.run_folder import CHECKPOINT
from icnn_bench.runner import run
from icnn_bench.sinks.base import Sink

# keys that legitimately differ between two runs of one config
TIMING = {"wall_s", "train_s", "steps_per_s", "resumed_from_step"}

FLOW_2D = {
    "seed": 0,
    "device": "cpu",
    "data": {"n_train": 1000, "n_val": 200, "n_test": 300, "seed": 0},
    "target": {"name": "moons", "params": {}},
    "model": {
        "name": "cpflow",
        "width": 12,
        "depth": 2,
        "alpha": 0.0,
        "normalise_positive": True,
        "log_det": "stochastic",  # draws probes from the model's own stream every step
    },
    "method": {"name": "softplus"},
    "trainer": {"steps": 40, "batch_size": 64, "lr": 5e-3, "grad_clip": 1.0, "eval_every": 10},
}


class InterruptAt(Sink):
    """Simulates Ctrl-C (or a kill) right after the evaluation of `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_eval(self, row: dict[str, float]) -> None:
        if row["step"] == self.step:
            raise KeyboardInterrupt


def configs(tiny_config) -> dict[str, dict]:
    importance = {"estimator": "importance", "train_samples": 64, "eval_samples": 512}
    flow = copy.deepcopy(FLOW_2D)
    return {
        "lift_quadrature": tiny_config("lift"),
        "softplus_importance_probe": tiny_config(
            "softplus",
            target={"name": "correlated_gaussian", "params": {"dim": 2, "rho": 0.5}},
            log_z=importance,
            trainer={"probe_every": 10, "probe_batches": 3},
        ),
        "pgd_halving": tiny_config("pgd", trainer={"lr_halve_every": 7}),
        "cpflow_stochastic": flow,
        "cpflow_exact_lift": {
            **copy.deepcopy(FLOW_2D),
            "model": {**FLOW_2D["model"], "log_det": "exact"},
            "method": {"name": "lift", "body": [8, 8, 12]},
        },
        "maf_reference": {
            **copy.deepcopy(FLOW_2D),
            "model": {"name": "maf_reference", "transforms": 2, "hidden": [16, 16]},
        },
        "lift_importance_flow": tiny_config(
            "lift",
            target={"name": "correlated_gaussian", "params": {"dim": 2, "rho": 0.5}},
            log_z={
                "estimator": "importance",
                "proposal": "flow",
                "flow": {"transforms": 1, "hidden": [16]},
                "train_samples": 64,
                "eval_samples": 256,
            },
        ),
        "softplus_streaming_fresh_eval": tiny_config(
            "lift", data={"stream": True}, trainer={"eval_pool": "batch", "eval_batch": 64}
        ),
    }


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def same_files(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "train_loss.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(a / name), pd.read_csv(b / name))


@pytest.mark.parametrize(
    "case",
    [
        "lift_quadrature",
        "softplus_importance_probe",
        "pgd_halving",
        "cpflow_stochastic",
        "cpflow_exact_lift",
        "maf_reference",
        "lift_importance_flow",
        "softplus_streaming_fresh_eval",
    ],
)
def test_an_interrupted_run_resumed_matches_an_uninterrupted_one(tiny_config, tmp_path, case):
    config = configs(tiny_config)[case]
    config["trainer"].update(steps=40, eval_every=10, checkpoint_every=15)
    whole = run(config, tmp_path / "whole")
    assert whole["status"] == "ok", whole["error"]
    assert not (tmp_path / "whole" / CHECKPOINT).exists()  # removed once finished

    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path / "cut", sinks=[InterruptAt(20)])
    stopped = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert stopped["status"] == "interrupted"
    assert "resumes it from step 15" in stopped["error"]
    assert (tmp_path / "cut" / CHECKPOINT).exists()

    resumed = run(config, tmp_path / "cut")
    assert resumed["resumed_from_step"] == 15
    assert comparable(resumed) == comparable(whole)
    same_files(tmp_path / "whole", tmp_path / "cut")
    assert not (tmp_path / "cut" / CHECKPOINT).exists()


def test_same_seed_same_device_same_result_json(tiny_config, tmp_path):
    config = tiny_config("lift", trainer={"steps": 30})
    first, second = run(config, tmp_path / "a"), run(config, tmp_path / "b")
    assert first["status"] == "ok"
    on_disk = [json.loads((tmp_path / d / "result.json").read_text()) for d in "ab"]
    assert comparable(on_disk[0]) == comparable(on_disk[1])
    assert comparable(first) == comparable(second)
    same_files(tmp_path / "a", tmp_path / "b")


def test_a_finished_run_is_kept_and_another_config_is_refused(tiny_config, tmp_path, capsys):
    config = tiny_config("pgd")
    first = run(config, tmp_path)
    stamp = (tmp_path / "result.json").stat().st_mtime_ns
    again = run(config, tmp_path)
    assert again == json.loads((tmp_path / "result.json").read_text())
    assert again["test_nll"] == first["test_nll"]
    assert (tmp_path / "result.json").stat().st_mtime_ns == stamp  # not rewritten

    other = tiny_config("pgd", trainer={"lr": 0.5})
    with pytest.raises(ConfigError, match=r"trainer.lr: 0.01 there, 0.5 here.*resume=never"):
        run(other, tmp_path)
    assert (tmp_path / "result.json").stat().st_mtime_ns == stamp  # left untouched
    other["trainer"]["resume"] = "never"
    assert run(other, tmp_path)["status"] in ("ok", "diverged")
    assert json.loads((tmp_path / "result.json").read_text())["test_nll"] != first["test_nll"]


def test_a_checkpoint_of_another_config_is_refused_untouched(tiny_config, tmp_path):
    config = tiny_config("pgd", trainer={"steps": 40, "checkpoint_every": 10})
    with pytest.raises(KeyboardInterrupt):
        run(config, tmp_path, sinks=[InterruptAt(20)])
    saved = (tmp_path / CHECKPOINT).read_bytes()
    other = tiny_config("pgd", trainer={"steps": 40, "checkpoint_every": 10, "batch_size": 32})
    with pytest.raises(ConfigError, match=r"checkpoint of another config.*batch_size"):
        run(other, tmp_path)
    assert (tmp_path / CHECKPOINT).read_bytes() == saved


def test_bad_resume_setting_is_one_line(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.resume='maybe'; choose one of: auto, never"):
        run(tiny_config(trainer={"resume": "maybe"}), tmp_path)


SCRIPT = """
import sys
from icnn_bench.cli import main
sys.argv = ["icnn-bench", *sys.argv[1:]]
main()
"""


def _command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-c",
        SCRIPT,
        "experiment=single",
        "target=gaussian",
        "method=lift",
        "model.width=32",
        "trainer.steps=600",
        "trainer.eval_every=50",
        "trainer.checkpoint_every=50",
        "data.n_train=2000",
        "logger.progress=false",
        f"hydra.run.dir={run_dir}",
    ]


def test_a_sigkilled_run_resumed_gives_the_uninterrupted_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (killed / CHECKPOINT).exists() and time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("the run ended before its first checkpoint")
        time.sleep(0.05)
    time.sleep(0.3)  # mid-training, past the first checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "result.json").exists(), "the run finished before it was killed"
    assert (killed / CHECKPOINT).exists()

    resumed = subprocess.run(_command(killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step" in resumed.stdout
    whole = subprocess.run(_command(tmp_path / "whole"), env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    results = [json.loads((d / "result.json").read_text()) for d in (killed, tmp_path / "whole")]
    assert results[0]["resumed_from_step"] >= 50
    assert comparable(results[0]) == comparable(results[1])
    same_files(killed, tmp_path / "whole")
