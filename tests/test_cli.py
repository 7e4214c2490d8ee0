"""The Hydra edge: every config option composes and builds, bad names get one line, and a
tiny multirun through the real console script writes run folders and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from icnn_bench import registry
from icnn_bench.build import method_label, model_from_config, target_from_config
from icnn_bench.command_line import GROUPS, available, unknown_choice
from icnn_bench.compose import compose, compose_with_hydra

METHOD_CHOICES = ", ".join(registry.options("method"))  # the package conf's method YAMLs
OPTIONS = [(group, option) for group in GROUPS for option in available(group)]
FAST = [
    "trainer.steps=6",
    "trainer.eval_every=3",
    "data.n_train=300",
    "data.n_val=50",
    "data.n_test=50",
    "trainer.batch_size=32",
    "model.width=8",
    "log_z.train_nodes=64",
    "log_z.eval_nodes=400",
    "device=cpu",
]


def compose_config(*overrides: str, hydra: bool = False):
    """The package's compose, as a DictConfig (attribute access), with Hydra's node if asked."""
    if hydra:
        return compose_with_hydra(overrides)
    return OmegaConf.create(compose(overrides))


# options that only build with a partner from another group
PARTNER = {("model", "ot_dual"): ["target=gaussian_pair"]}


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_config_option_composes_and_builds(group, option):
    cfg = compose_config(f"{group}={option}", *PARTNER.get((group, option), []))
    config = OmegaConf.to_container(cfg, resolve=True)
    if group in ("target", "method", "model", "logger"):
        assert config[group]["name"] == option
    target = target_from_config(config["target"])
    model = model_from_config(config, target, seed=0)
    if model.constraint_methods():
        assert model.method_name == config["method"]["name"]
    else:  # the reference flow has no weight source; its column is its own name
        assert method_label(config) == config["model"]["name"] == "maf_reference"


@pytest.mark.parametrize("preset", ["paper_cpflow_toy", "paper_tabular_cpflow"])
def test_maf_reference_in_a_flow_preset_builds_the_maf(preset):
    # the preset's `override /model: cpflow` must not win over the method's choice of model
    cfg = compose_config(f"experiment={preset}", "method=maf_reference", "target=moons")
    config = OmegaConf.to_container(cfg, resolve=True)
    model = model_from_config(config, target_from_config(config["target"]), seed=0)
    assert type(model).__name__ == "MAFReference" and not model.constraint_methods()
    assert method_label(config) == "maf_reference"


@pytest.mark.parametrize("preset", ["quick", "paper_1d"])
def test_sweep_presets_are_multiruns_over_target_method_seed(preset):
    cfg = compose_config(f"experiment={preset}", hydra=True)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert set(cfg.hydra.sweeper.params) == {"target", "method", "seed"}
    methods = cfg.hydra.sweeper.params.method.split(",")
    assert methods == ["pgd", "softplus", "lift"]


def test_paper_1d_preset_holds_the_papers_recipe():
    cfg = compose_config("experiment=paper_1d", hydra=True)
    assert (cfg.model.width, cfg.model.depth, cfg.model.alpha) == (128, 3, 0.02)
    assert cfg.model.init == "folded_normal"
    assert (cfg.trainer.steps, cfg.trainer.lr, cfg.trainer.batch_size) == (3000, 1e-3, 256)
    assert (cfg.trainer.grad_clip, cfg.trainer.eval_every) == (1.0, 200)
    assert cfg.log_z.eval_nodes == 8000
    assert len(cfg.hydra.sweeper.params.target.split(",")) == 8
    assert cfg.hydra.sweeper.params.seed == "0,1,2,3,4"
    assert list(cfg.method.body) == [64, 64, 96] and cfg.method.slack_init == -2.0
    # what the preset builds is what made the committed table: same parameter counts
    committed = pd.read_csv(Path(__file__).parents[1] / "results" / "paper_1d" / "runs.csv")
    for method in ("pgd", "softplus", "lift"):
        config = compose(["experiment=paper_1d", "target=gumbel", f"method={method}", "seed=0"])
        model = model_from_config(config, target_from_config(config["target"]), seed=0)
        built = sum(p.numel() for p in model.trainable_parameters())
        assert {built} == set(committed.loc[committed["method"] == method, "n_params"]), method


def test_unknown_group_choice_is_found_before_hydra_runs():
    assert unknown_choice(["method=pgd,lift", "target=gumbel"]) is None
    message = unknown_choice(["target=gumbel", "method=pgd,adam"])
    assert message == f"unknown method 'adam'; choose one of: {METHOD_CHOICES}"
    assert unknown_choice(["target=cauchy"]).startswith("unknown target 'cauchy'; choose one of:")
    assert all(t in unknown_choice(["target=cauchy"]) for t in available("target"))
    assert unknown_choice(["model.width=3", "hydra/launcher=basic"]) is None


def icnn_bench(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    script = "from icnn_bench.cli import main; main()"
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=environment,
    )


def test_unknown_name_on_the_command_line_is_one_line(tmp_path):
    done = icnn_bench("method=adam", cwd=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"icnn-bench: unknown method 'adam'; choose one of: {METHOD_CHOICES}"
    )
    assert not (tmp_path / "outputs").exists()


def test_tiny_multirun_writes_run_folders_and_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    done = icnn_bench(
        "-m",
        "target=gaussian,beta",
        "method=pgd,lift",
        "seed=0",
        "model.depth=2,0",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        cwd=tmp_path,
    )
    # some runs failed: the sweep still ran the others, and ends non-zero with one line
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("icnn-bench: 4 of 8 runs failed or diverged; the commonest error")
    assert "model.depth=0 must be a positive integer" in last
    results = [json.loads(p.read_text()) for p in sweep.rglob("result.json")]
    assert len(results) == 8
    # depth=0 is impossible: those runs fail with one line each and the sweep goes on
    statuses = sorted((r["status"], r["error"] is None) for r in results)
    assert statuses == [("failed", False)] * 4 + [("ok", True)] * 4
    assert all("model.depth=0" in r["error"] for r in results if r["status"] == "failed")
    for path in sweep.rglob("result.json"):
        assert (path.parent / "config.yaml").exists()
        if json.loads(path.read_text())["status"] == "ok":
            assert (path.parent / "metrics.csv").exists()
            assert (path.parent / "weights.pt").exists()
    for name in ("summary.csv", "runs.csv", "table.md", "loss_curves.png", "densities.png"):
        assert (sweep / name).exists(), name
    summary = pd.read_csv(sweep / "summary.csv")
    # a swept setting other than the seed becomes its own column, never averaged together
    assert set(summary["method"]) == {
        "pgd [model.depth=2]",
        "pgd [model.depth=0]",
        "lift [model.depth=2]",
        "lift [model.depth=0]",
    }
    assert summary.groupby("method")["failed"].sum().to_dict() == {
        "pgd [model.depth=0]": 2,
        "pgd [model.depth=2]": 0,
        "lift [model.depth=0]": 2,
        "lift [model.depth=2]": 0,
    }
    assert "| gaussian |" in (sweep / "table.md").read_text()
    assert "KL(target" in done.stdout  # the table is printed at the end


def test_single_run_prints_its_folder_and_fails_loudly_on_bad_sizes(tmp_path):
    ok = icnn_bench(
        "experiment=single",
        "target=laplace",
        "method=softplus",
        f"hydra.run.dir={tmp_path / 'one'}",
        *FAST,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f"run folder: {tmp_path / 'one'}" in ok.stdout
    assert json.loads((tmp_path / "one" / "result.json").read_text())["status"] == "ok"
    bad = icnn_bench(
        "experiment=single",
        f"hydra.run.dir={tmp_path / 'two'}",
        *FAST,
        "trainer.batch_size=100000",
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stdout + bad.stderr
    assert "trainer.batch_size=100000 is larger than the training split" in bad.stdout


def test_help_names_presets_and_cfg_shows_the_default_sweeps_axes(tmp_path):
    helped = icnn_bench("--help", cwd=tmp_path)
    assert helped.returncode == 0
    presets = helped.stdout.split("Presets (experiment=...):")[1].split("Common overrides")[0]
    for preset in registry.options("experiment"):
        assert preset in presets.replace(",", " ").split(), preset
    for word in ("regime=authors", "trainer.steps", "--cfg job", "--hydra-help"):
        assert word in helped.stdout
    shown = icnn_bench("--cfg", "job", cwd=tmp_path)
    assert shown.returncode == 0
    first = shown.stdout.splitlines()[0]
    assert first.startswith("# a sweep of 24 jobs over:") and "method=pgd,softplus,lift" in first
