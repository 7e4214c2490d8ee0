"""A method and a target added from the user's own folder (examples/extending), not the
package: picked up through --config-dir, swept, reported and loaded back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_cli import FAST, icnn_bench

EXAMPLE = Path(__file__).parents[1] / "examples" / "extending"


@pytest.fixture(autouse=True)
def _package_conf_only(monkeypatch):
    """load_run(config_dir=...) adds a folder for the process: not for the other tests."""
    from icnn_bench import registry

    monkeypatch.setattr(registry, "_added", [])
    yield
    registry._read.cache_clear()


def test_a_method_and_a_target_from_a_users_folder_sweep_and_report(tmp_path):
    folder = tmp_path / "my_stuff"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    sweep = tmp_path / "sweep"
    done = icnn_bench(
        "--config-dir",
        str(folder),
        "-m",
        "target=weibull",
        "method=pgd,expw",
        "seed=0,1",
        *FAST,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs["method"].unique()) == ["expw", "pgd"]
    assert set(runs["target"]) == {"weibull"} and (runs["status"] == "ok").all()
    assert runs["kl"].notna().all()  # the user's target brought its exact density
    table = (sweep / "table.md").read_text()
    assert "| target | pgd | expw |" in table  # the package's baseline first, then the user's
    # no lift in the sweep: every pair is compared, and both methods are on the leaderboard
    assert "expw vs pgd: " in table and "2 pairs per cell" in table
    paired = pd.read_csv(sweep / "paired.csv")
    assert set(zip(paired["method"], paired["baseline"], strict=True)) == {("expw", "pgd")}
    assert "## Leaderboard" in table and "| expw |" in table.split("## Leaderboard")[1]
    ranks = pd.read_csv(sweep / "ranks.csv")
    assert {"expw", "pgd"} <= set(ranks.columns) and len(ranks) == 2
    assert (sweep / "cd_diagram.png").stat().st_size > 5_000

    from icnn_bench import load_run

    run_dir = next(sweep.glob("*-weibull-expw-seed0"))
    model = load_run(run_dir, config_dir=folder)
    x = torch.linspace(0.05, 3.0, 50)
    assert torch.isfinite(model.log_prob(x[:, None])).all()
    assert all((w >= 0).all() for k, w in model.method.pinned.items() if k.startswith("W"))


def test_an_unknown_name_lists_the_users_options_too(tmp_path):
    done = icnn_bench("--config-dir", str(EXAMPLE), "method=nope", cwd=tmp_path)
    assert done.returncode == 2
    assert "choose one of: exp, expw, lift" in done.stderr and done.stderr.count("\n") == 1
