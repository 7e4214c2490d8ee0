"""scripts/reproduce.py: every committed table from one command (here: one, CI-sized)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "reproduce.py"


def test_the_reproduce_command_runs_a_preset_and_writes_its_report(tmp_path):
    small = [
        "target=gaussian", "method=pgd,lift", "seed=0", "trainer.steps=4", "trainer.eval_every=2",
        "data.n_train=300", "data.n_val=50", "data.n_test=50", "trainer.batch_size=32",
        "model.width=8",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "paper_1d", "--jobs", "2",
         "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
         "--extra", *small],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "results" / "paper_1d" / "table.md").exists()
    assert (tmp_path / "results" / "paper_1d" / "curves.csv.gz").exists()
    assert "| paper_1d | exact |" in done.stdout and "**all exact**" in done.stdout
    again = subprocess.run(  # resumable: the finished runs are kept
        [sys.executable, str(SCRIPT), "--only", "paper_1d", "--jobs", "2",
         "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
         "--extra", *small],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0 and "[finished earlier; kept]" in again.stdout
    assert "$ icnn-bench-report " in again.stdout  # the report step, named as it is


def test_the_dry_run_lists_every_table():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("paper_1d", "paper_latents", "synthetic_nd", "paper_ablation",
                 "paper_cpflow_toy", "paper_tabular_cpflow", "paper_1d_authors",
                 "paper_ablation_authors"):  # fmt: skip
        assert f"| {name} |" in done.stdout
    assert "regime_comparison.py" in done.stdout
    assert "leaderboard_mnist" not in done.stdout  # the field's tables only when asked
    assert "Estimated from the committed runs' own wall times" in done.stdout
    assert "| paper_1d | 120 |" in done.stdout  # results/paper_1d/runs.csv's runs
    field = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--field", "--regime", "exact"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert field.returncode == 0, field.stderr[-2000:]
    for name in ("leaderboard_1d", "leaderboard_mnist", "authors_2d", "leaderboard_ot_mixture"):
        assert f"| {name} |" in field.stdout
    assert "| leaderboard_1d_authors |" not in field.stdout  # --regime still filters


def test_the_gpu_check_runs_on_a_cpu_in_ci_size(tmp_path):
    script = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    out = tmp_path / "gpu.md"
    done = subprocess.run(
        [sys.executable, str(script), "--device", "cpu", "--small", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for section in ("quick preset on the device and on the CPU", "Seeds stacked", "CP-Flow"):
        assert section in text
    assert "| lift | 5 |" in text


def test_on_a_cluster_every_sweep_is_submitted_at_once_and_reported_when_it_ends(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    small = ["target=gaussian", "method=pgd", "seed=0", "trainer.steps=4", "trainer.eval_every=2",
             "data.n_train=300", "data.n_val=50", "data.n_test=50", "trainer.batch_size=32",
             "model.width=8", "trainer.probe_every=2", "trainer.probe_batches=2",
             "trainer.probe_permutations=0"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--only", "paper_1d,paper_ablation", "--launcher",
         "submitit_local", "--runs", str(tmp_path / "runs"), "--extra", *small],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    started = [line for line in done.stdout.splitlines() if line.endswith(" &")]
    assert len(started) == 2  # both submitted before either was waited for
    for name in ("paper_1d", "paper_ablation"):
        assert (tmp_path / "runs" / "reports" / name / "table.md").exists()
    assert "| **this command** |" in done.stdout  # a part: its total is not the whole's


def test_the_estimate_counts_only_the_runs_a_switch_sweep_makes(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import pandas as pd
    import reproduce

    results = SCRIPT.parents[1] / "results"
    name = "fresh evaluation batch"  # the committed rows hold all three methods
    sweep = reproduce.Sweep(
        f"switch: {name}", "authors", (*reproduce.SWITCH_SWEEP, *reproduce.SWITCHES[name]), None
    )
    runs = pd.read_csv(results / "regime_comparison" / "runs.csv")
    mine = runs[(runs.regime == name) & (runs.method == "lift")]
    assert sorted(reproduce.committed_seconds(sweep, results)) == sorted(mine.wall_s.tolist())
    assert len(mine) < (runs.regime == name).sum()
    missing = reproduce.Sweep("no_such_table", "exact", (), None)
    assert reproduce.committed_seconds(missing, results) == []


def test_a_part_of_the_reproduction_writes_its_timings_apart_from_the_whole(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import reproduce

    ran = []
    monkeypatch.setattr(reproduce, "run", lambda command, dry: ran.append(command) or (60.0, 0))
    results = tmp_path / "results"
    results.mkdir()
    args = ["--only", "paper_1d", "--runs", str(tmp_path / "runs"), "--results", str(results)]
    assert reproduce.main(args) == 0
    assert len(ran) == 2  # the sweep and its report, not run here
    assert not (results / "reproduce.md").exists()  # not the whole reproduction's file
    text = (results / "reproduce_partial.md").read_text()
    assert "`python scripts/reproduce.py --only paper_1d`" in text
    row = re.compile(
        r"\| paper_1d \| exact \| \d{4}-\d\d-\d\d \d\d:\d\d \| 1\.0 min \| .+ \| no \| 0 \|"
    )
    assert row.search(text), text
    assert "Not the whole reproduction in one go: some of the tables." in text
    from icnn_bench.timing import cpu_name

    assert f"on {cpu_name()}, " in text  # times are read against the machine that made them
    assert str(tmp_path) not in text  # no machine paths in a committed file


def test_only_a_whole_reproduction_in_one_go_writes_reproduce_md(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import reproduce

    monkeypatch.setattr(reproduce, "run", lambda command, dry: (6.0, 0))
    comparison_ok = lambda command, **k: subprocess.CompletedProcess(command, 0)  # noqa: E731
    monkeypatch.setattr(reproduce.subprocess, "run", comparison_ok)
    results, runs = tmp_path / "results", tmp_path / "runs"
    results.mkdir()
    args = ["--runs", str(runs), "--results", str(results)]
    assert reproduce.main(args) == 0
    whole = (results / "reproduce.md").read_text()
    assert whole.startswith("# Reproducing every table") and "| paper_1d_authors |" in whole
    assert "| **the whole reproduction** |" in whole
    assert "Not the whole" not in whole
    assert not (results / "reproduce_partial.md").exists()  # its progress file is superseded
    (runs / "paper_1d").mkdir(parents=True)  # run again over a sweep folder: resumed
    assert reproduce.main(args) == 0
    assert (results / "reproduce.md").read_text() == whole  # the whole one is kept
    again = (results / "reproduce_partial.md").read_text()
    assert "resumed: a time covers only what ran in this command" in again
    assert "| paper_1d | exact |" in again and "| yes | 0 |" in again


def test_a_reproduction_cut_short_keeps_the_times_it_measured(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import reproduce

    calls = []

    def run(command, dry):  # the first sweep and its report end; the session ends in the second
        calls.append(command)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return 120.0, 0

    monkeypatch.setattr(reproduce, "run", run)
    results = tmp_path / "results"
    args = ["--only", "paper_1d,paper_latents", "--runs", str(tmp_path / "runs"),
            "--results", str(results)]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(args)
    text = (results / "reproduce_partial.md").read_text()
    assert "1 of 2 sweeps ended when this was written" in text
    assert re.search(r"\| paper_1d \| exact \| .+ \| 2\.0 min \|", text), text
    assert "| paper_latents |" not in text and "**so far (this command)**" in text
    assert not (results / "reproduce.md").exists()


def test_the_authors_regime_alone_compares_with_the_committed_exact_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import reproduce

    monkeypatch.setattr(reproduce, "run", lambda command, dry: (6.0, 0))
    compared = []

    def comparison_fails(command, **kwargs):
        compared.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(reproduce.subprocess, "run", comparison_fails)
    results = tmp_path / "results"
    args = ["--regime", "authors", "--runs", str(tmp_path / "runs"), "--results", str(results)]
    assert reproduce.main(args) == 1  # a failed comparison is not a success
    (command,) = compared
    exact = Path(command[command.index("--exact") + 1])
    assert exact == SCRIPT.parent.parent / "results" / "paper_1d"  # no exact sweep ran here
    assert (exact / "runs.csv").is_file()
    assert "| **this command** |" in (results / "reproduce_partial.md").read_text()
