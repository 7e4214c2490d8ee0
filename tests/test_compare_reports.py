"""scripts/compare_reports.py: how far a reproduction agrees with a committed report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _report(folder: Path, nll: list[float], verdicts: list[str]) -> Path:
    folder.mkdir()
    pd.DataFrame(
        {
            "target": ["gumbel"] * 4,
            "method": ["pgd", "pgd", "lift", "lift"],
            "seed": [0, 1, 0, 1],
            "test_nll": nll,
            "kl": [0.1, 0.2, 0.3, 0.4],
        }
    ).to_csv(folder / "runs.csv", index=False)
    pd.DataFrame(
        {
            "target": ["gumbel", "gumbel"],
            "method": ["lift", "lift"],
            "baseline": ["pgd", "softplus"],
            "metric": ["kl", "kl"],
            "verdict": verdicts,
        }
    ).to_csv(folder / "paired.csv", index=False)
    return folder


def test_a_report_agrees_with_itself_and_a_changed_one_is_named(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import compare_reports

    a = _report(tmp_path / "a", [1.0, 2.0, 3.0, 4.0], ["win", "tie"])
    b = _report(tmp_path / "b", [1.0, 2.5, 3.0, 4.0], ["win", "loss"])
    runs = compare_reports.run_differences(
        pd.read_csv(a / "runs.csv"), pd.read_csv(b / "runs.csv")
    ).set_index("method")
    assert runs.loc["lift", "identical test NLL"] == 2
    assert runs.loc["pgd", "identical test NLL"] == 1
    assert runs.loc["pgd", "max abs Δ test_nll"] == 0.5
    assert runs.loc["lift", "max abs Δ kl"] == 0.0
    text = compare_reports.compare(a, b)
    assert "Paired verdicts: 1 of 2 differ." in text
    assert "| gumbel | lift | softplus | kl | tie | loss |" in text
    assert "Paired verdicts: 0 of 2 differ." in compare_reports.compare(a, a)
