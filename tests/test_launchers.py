"""Sweeps through Hydra's launchers: submitit_local and joblib write every run folder and the
report; the SLURM preset composes (no cluster here); unknown launchers get one line."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import yaml
from test_cli import FAST, icnn_bench

from icnn_bench.cli import CONF_DIR
from icnn_bench.command_line import unknown_choice
from icnn_bench.compose import compose_with_hydra

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

# scripts/ is not a package: load scripts/tuned_preset.py under an importable name
_spec = importlib.util.spec_from_file_location(
    "scripts_tuned_preset", CONF_DIR.parents[1] / "scripts" / "tuned_preset.py"
)
sys.modules["scripts_tuned_preset"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sys.modules["scripts_tuned_preset"])

SWEEP = ["target=gaussian", "method=pgd,lift", "seed=0", *FAST]


def finished_runs(sweep_dir) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


@pytest.mark.parametrize(
    "launcher",
    [
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    ],
    ids=["submitit_local", "joblib"],
)
def test_a_launched_sweep_writes_every_run_folder_and_the_report(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    done = icnn_bench("-m", *launcher, *SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = finished_runs(sweep)
    assert sorted(r["method"] for r in runs.values()) == ["lift", "pgd"]
    assert all(r["status"] == "ok" for r in runs.values())
    assert (sweep / "table.md").exists() and (sweep / "paired.csv").exists()


def test_slurm_preset_composes_to_the_submitit_slurm_launcher():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.array_parallelism == 64
    assert launcher.timeout_min == 60 and launcher.cpus_per_task == 2


def test_unknown_launcher_or_sweeper_is_one_line(tmp_path):
    message = unknown_choice(["hydra/launcher=slurmm"])
    choices = "choose one of: basic, cores, joblib"
    assert message.startswith(f"unknown hydra/launcher 'slurmm'; {choices}")
    assert "submitit_slurm" in message and "pip install" in message
    done = icnn_bench("hydra/sweeper=nevergrad", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "unknown hydra/sweeper 'nevergrad'" in done.stderr


def test_optuna_tunes_the_learning_rate_and_feeds_the_tuned_preset(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from scripts_tuned_preset import main as write_preset

    sweep = tmp_path / "tune"
    args = ["experiment=tune_lr", "method=pgd", "target=gaussian", "hydra.sweeper.n_trials=3"]
    done = icnn_bench(*args, *FAST, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    lr = best["best_params"]["trainer.lr"]
    assert 1e-4 <= lr <= 3e-2
    tried = [yaml.safe_load(p.read_text())["trainer"]["lr"] for p in sweep.glob("*/config.yaml")]
    assert len(tried) == 3 and len(set(tried)) == 3 and lr in tried
    preset = tmp_path / "tuned.yaml"
    write_preset([str(sweep), "--out", str(preset)])
    assert str(tmp_path) not in preset.read_text()
    written = yaml.safe_load(preset.read_text())
    assert written["tuned_lr"] == {"pgd": pytest.approx(lr, rel=1e-5)}
    assert written["trainer"]["lr"] == "${tuned_lr.${method.name}}"


def test_the_tuned_preset_gives_each_method_its_own_learning_rate():
    if not (CONF_DIR / "experiment" / "tuned.yaml").exists():
        pytest.skip("experiment=tuned not generated")
    rates = {}
    for method in ("pgd", "softplus", "lift"):
        cfg = compose_with_hydra(["experiment=tuned", f"method={method}"])
        rates[method] = cfg.trainer.lr
        assert cfg.trainer.lr == cfg.tuned_lr[method]
    assert len(set(rates.values())) == 3
