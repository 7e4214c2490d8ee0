"""scripts/regime_comparison.py over committed runs.csv tables (no training)."""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import regime_comparison


def runs_table(path: Path, kl: dict[str, list[float]], target: str = "gumbel") -> Path:
    rows = [
        {"target": target, "model": "icnn", "method": method, "seed": seed, "status": "ok",
         "kl": value, "tv": value, "tv_authors": value, "run_dir": f"/nowhere/{method}{seed}"}
        for method, values in kl.items()
        for seed, value in enumerate(values)
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_verdicts_per_regime_and_the_later_source_wins(tmp_path):
    # exact: lift and pgd tie; a second exact source replaces pgd's cells with clearly worse ones
    exact = runs_table(
        tmp_path / "exact.csv", {"pgd": [0.010, 0.012, 0.011], "lift": [0.011, 0.010, 0.012]}
    )
    rerun = runs_table(tmp_path / "rerun.csv", {"pgd": [0.050, 0.052, 0.049]})
    authors = runs_table(
        tmp_path / "authors.csv", {"pgd": [0.01, 0.03, 0.02], "lift": [0.02, 0.01, 0.03]}
    )
    out = tmp_path / "out"
    regime_comparison.main(["--exact", str(exact), "--authors", str(authors), "--out", str(out)])
    table = (out / "table.md").read_text()
    assert "- exact: vs pgd: 0 wins, 1 ties, 0 losses" in table
    regime_comparison.main(
        ["--exact", str(exact), "--exact", str(rerun), "--authors", str(authors), "--out", str(out)]
    )
    table = (out / "table.md").read_text()
    assert "- exact: vs pgd: 1 wins, 0 ties, 0 losses" in table  # the rerun's pgd cells won
    assert "- authors: vs pgd: 0 wins, 1 ties, 0 losses" in table
    assert "| gumbel | pgd | 0.0503 ± 0.0015 |" in table
    assert len(pd.read_csv(out / "runs.csv")) == 12  # 6 exact (3 replaced) + 6 authors


def test_a_switch_run_for_the_lift_alone_borrows_the_baselines_from_exact(tmp_path):
    exact = runs_table(
        tmp_path / "exact.csv", {"pgd": [0.05, 0.052, 0.049], "lift": [0.01, 0.011, 0.012]}
    )
    authors = runs_table(
        tmp_path / "authors.csv", {"pgd": [0.05, 0.05, 0.05], "lift": [0.01, 0.01, 0.01]}
    )
    lift_only = runs_table(tmp_path / "switch.csv", {"lift": [0.03, 0.031, 0.029]})
    out = tmp_path / "out"
    regime_comparison.main(
        ["--exact", str(exact), "--authors", str(authors), "--switch", f"emission={lift_only}",
         "--out", str(out)]
    )  # fmt: skip
    table = (out / "table.md").read_text()
    assert "- emission: 6 ok runs, seeds [0, 1, 2]; pgd from the exact regime" in table
    assert "| gumbel | lift | 0.0110 ± 0.0010 | 0.0300 ± 0.0010 | 0.0100 ± 0.0000 |" in table
    assert "- emission: vs pgd: 1 wins, 0 ties, 0 losses" in table
