"""Aggregation from run-folder files: mean ± std per cell, best marked, failures counted."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from icnn_bench.cli import report_main
from icnn_bench.report import make_report


def fake_run(root, target, method, seed, status="ok", kl=None, with_result=True):
    run_dir = root / f"{target}-{method}-seed{seed}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "target": {"name": target}, "method": {"name": method}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    if with_result:
        result = {
            "target": target,
            "model": "icnn",
            "method": method,
            "seed": seed,
            "status": status,
            "kl": kl,
            "tv": kl,
            "test_nll": kl,
            "error": None if status == "ok" else "boom",
        }
        (run_dir / "result.json").write_text(json.dumps(result))
        pd.DataFrame(
            {
                "step": [0, 10, 20],
                "val_nll": [3.0, 2.0, 1.0 + (kl or 0)],
                "dead_frac": [0.0, 0.1, 0.2],
            }
        ).to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    for seed, (a, b, c) in enumerate([(0.10, 0.20, 0.05), (0.30, 0.40, 0.07)]):
        fake_run(tmp_path, "gumbel", "pgd", seed, kl=a)
        fake_run(tmp_path, "gumbel", "softplus", seed, kl=b)
        fake_run(tmp_path, "gumbel", "lift", seed, kl=c)
    fake_run(tmp_path, "gumbel", "lift", 2, status="diverged")
    fake_run(tmp_path, "gumbel", "pgd", 2, with_result=False)  # still running
    return tmp_path


def test_summary_holds_mean_std_and_counts(sweep):
    make_report(sweep)
    summary = pd.read_csv(sweep / "summary.csv").set_index("method")
    assert summary.loc["pgd", "kl_mean"] == pytest.approx(0.2)
    assert summary.loc["pgd", "kl_std"] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["lift", "kl_n"] == 2
    assert summary.loc["lift", "failed"] == 1
    assert summary.loc["pgd", "running"] == 1
    assert summary.loc["softplus", ["failed", "running"]].tolist() == [0, 0]


def test_table_marks_the_best_method_and_counts_failures(sweep):
    report = make_report(sweep)
    table = (sweep / "table.md").read_text()
    assert table == report.table_markdown
    row = next(line for line in table.splitlines() if line.startswith("| gumbel"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "gumbel"
    assert cells[1].startswith("0.2000 ± 0.1414 (n=2)") and "1 running" in cells[1]
    assert not cells[1].startswith("**") and not cells[2].startswith("**")
    assert cells[3].startswith("**0.0600 ± 0.0141**") and "1 failed" in cells[3]


def test_figures_are_written_and_a_second_pass_gives_the_same_tables(sweep):
    make_report(sweep)
    first = {n: (sweep / n).read_text() for n in ("summary.csv", "table.md", "runs.csv")}
    report = make_report(sweep)
    assert {n: (sweep / n).read_text() for n in first} == first
    assert (sweep / "loss_curves.png").stat().st_size > 10_000
    assert sweep / "loss_curves.png" in report.files


def test_report_command_on_an_empty_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icnn-bench-report: no run folders") and "\n" not in err


def test_report_command_writes_to_another_folder(sweep, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out")
    report_main([str(sweep), "--out", str(out)])
    assert (out / "table.md").exists() and not (sweep / "table.md").exists()
    assert "KL(target" in capsys.readouterr().out


def test_settings_pool_unless_swept_when_hydra_recorded_the_overrides(tmp_path):
    for seed, lr in ((0, 0.1), (1, 0.2)):
        run_dir = fake_run(tmp_path, "gumbel", "lift", seed, kl=0.1)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["trainer"] = {"lr": lr}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / ".hydra").mkdir()
        overrides = [f"seed={seed}"]
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    make_report(tmp_path)
    assert list(pd.read_csv(tmp_path / "summary.csv")["method"]) == ["lift"]  # one cell
    for seed, lr in ((0, 0.1), (1, 0.2)):  # now lr was a command-line sweep axis
        path = tmp_path / f"gumbel-lift-seed{seed}" / ".hydra" / "overrides.yaml"
        path.write_text(yaml.safe_dump([f"seed={seed}", f"trainer.lr={lr}"]))
    make_report(tmp_path)
    assert sorted(pd.read_csv(tmp_path / "summary.csv")["method"]) == [
        "lift [trainer.lr=0.1]",
        "lift [trainer.lr=0.2]",
    ]
