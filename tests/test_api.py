"""The Python API: load_run's model takes what people pass it; load_sweep is tidy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from icnn_bench import load_curves, load_run, load_sweep
from icnn_bench.runner import run


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A tiny sweep over trainer.lr written as Hydra would: run folders with overrides."""
    import copy

    import yaml
    from conftest import TINY

    root = tmp_path_factory.mktemp("sweep")
    for i, (method, lr) in enumerate([("pgd", 0.01), ("pgd", 0.001), ("lift", 0.01)]):
        config = copy.deepcopy(TINY)
        config["method"] = {"name": method, **({"body": [8, 8, 12]} if method == "lift" else {})}
        config["trainer"]["lr"] = lr
        folder = root / f"{i}-gaussian-{method}-seed0"
        run(config, folder)
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"method={method}", f"trainer.lr={lr}"])
        )
    return root


def test_load_run_takes_numpy_float64_and_flat_1d_input(sweep):
    model = load_run(sweep / "2-gaussian-lift-seed0")
    grid = np.linspace(-2, 2, 7)
    expected = model.log_prob(torch.tensor(grid, dtype=torch.float32)[:, None])
    assert isinstance(expected, torch.Tensor) and expected.shape == (7,)
    for given in (torch.tensor(grid), list(grid), torch.tensor(grid)[:, None]):
        torch.testing.assert_close(model.log_prob(given), expected)
    for given in (grid, grid.astype(np.float32), grid[:, None]):  # numpy in, numpy out
        out = model.log_prob(given)
        assert isinstance(out, np.ndarray) and out.dtype == given.dtype and out.shape == (7,)
        np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6)
    energy = model.energy(grid)
    assert isinstance(energy, np.ndarray) and energy.shape == (7,) and energy.dtype == np.float64
    score = model.score(grid.astype(np.float32))
    assert isinstance(score, np.ndarray) and score.shape == (7, 1) and score.dtype == np.float32
    with pytest.raises(
        ValueError, match=r"expected points of shape \(n, 1\) or \(n,\); got \(3, 2\)"
    ):
        model.log_prob(np.zeros((3, 2)))


def test_load_run_exposes_config_result_target_and_scores(sweep):
    model = load_run(sweep / "0-gaussian-pgd-seed0")
    assert model.config["method"]["name"] == "pgd" and model.result["status"] == "ok"
    assert model.target.name == "gaussian" and model.dim == 1
    x = torch.linspace(-1.5, 1.5, 9)
    score = model.score(x)
    eps = 1e-3
    numeric = (model.log_prob(x + eps) - model.log_prob(x - eps)) / (2 * eps)
    torch.testing.assert_close(score[:, 0], numeric, atol=2e-2, rtol=2e-2)
    assert model.log_prob(x, grad=True).requires_grad
    draws = model.sample(500, seed=1)
    assert draws.shape == (500, 1) and torch.isfinite(draws).all()
    assert abs(float(draws.mean())) < 0.5  # a fit to N(0, 1)
    torch.testing.assert_close(draws, model.sample(500, seed=1))
    assert math.isfinite(float(model.energy(np.array([0.3]))[0]))


def test_load_sweep_is_one_typed_row_per_run_and_curves_are_long(sweep):
    runs = load_sweep(sweep)
    assert len(runs) == 3
    assert runs["trainer.lr"].dtype == np.float64
    assert sorted(runs["trainer.lr"]) == [0.001, 0.01, 0.01]
    assert set(runs["method_name"]) == {"pgd", "lift"}
    curves = load_curves(sweep)
    assert {"run_dir", "target", "method", "seed", "trainer.lr", "step", "metric", "value"} <= set(
        curves.columns
    )
    assert {"val_nll", "train_loss", "dead_frac"} <= set(curves["metric"])
    one = curves[(curves.metric == "val_nll") & (curves.method == "lift")]
    assert one["step"].tolist() == [0, 10, 20]
    written = pd.read_csv(sweep / "runs.csv") if (sweep / "runs.csv").exists() else None
    from icnn_bench.report import make_report

    make_report(sweep)
    written = pd.read_csv(sweep / "runs.csv")
    assert written["trainer.lr"].dtype == np.float64


def test_a_report_folder_is_redrawn_from_its_compact_run_data(sweep, tmp_path):
    import shutil

    from icnn_bench.report import make_report, redraw

    made = make_report(sweep)
    copy = tmp_path / "results"
    copy.mkdir()
    for name in ("runs.csv", "curves.csv.gz", "densities.csv.gz", "dwell.csv.gz"):
        if (sweep / name).exists():
            shutil.copy(sweep / name, copy / name)
    again = redraw(copy)  # no run folders: only the compact copies
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731 (the title names the folder)
    assert body(again.table_markdown) == body(made.table_markdown)
    drawn = {p.name for p in again.files if p.suffix == ".png"}
    assert {"loss_curves.png", "densities.png", "dead_fraction.png"} <= drawn
    curves = pd.read_csv(copy / "curves.csv.gz")
    assert {"run", "step", "val_nll", "kl"} <= set(curves.columns)


def test_redrawing_a_folder_whose_rows_name_no_run_is_one_line(sweep, tmp_path, capsys):
    from icnn_bench.cli import report_main
    from icnn_bench.report import make_report

    make_report(sweep)
    merged = tmp_path / "merged"  # as scripts/regime_comparison.py writes: rows of other folders
    merged.mkdir()
    runs = pd.read_csv(sweep / "runs.csv")
    runs.loc[runs.index[:2], "run"] = None
    runs.to_csv(merged / "runs.csv", index=False)
    with pytest.raises(SystemExit) as stopped:
        report_main([str(merged), "--redraw"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "2 of" in error and "name no run" in error and "Traceback" not in error
    assert not (merged / "table.md").exists()  # nothing half-written


def test_an_older_report_with_only_runs_csv_gets_its_tables_rebuilt(sweep, tmp_path, capsys):
    from icnn_bench.report import make_report, redraw

    made = make_report(sweep)
    old = tmp_path / "results"
    old.mkdir()
    runs = pd.read_csv(sweep / "runs.csv")  # the older format: run folders' absolute paths
    runs["run_dir"] = [f"/elsewhere/{Path(name).name}" for name in runs.pop("run")]
    runs.to_csv(old / "runs.csv", index=False)
    (old / "loss_curves.png").write_bytes(b"as first drawn")
    again = redraw(old)
    assert "tables rebuilt, figures kept as drawn" in capsys.readouterr().out
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731
    assert body(again.table_markdown) == body(made.table_markdown)
    assert (old / "loss_curves.png").read_bytes() == b"as first drawn"
    assert "/elsewhere" not in (old / "runs.csv").read_text()  # runs named relative to it
