"""Progress on the terminal: a bar with the current losses when asked, one line per run."""

from __future__ import annotations

from icnn_bench.runner import run
from icnn_bench.sinks.console import ConsoleSink


def test_progress_bar_shows_the_current_losses_and_a_line_per_run(tiny_config, tmp_path, capsys):
    result = run(tiny_config("pgd"), tmp_path, sinks=[ConsoleSink(progress=True)])
    captured = capsys.readouterr()
    assert "gaussian/pgd/seed0" in captured.err  # the bar names the run
    assert "train_loss=" in captured.err and "val_nll=" in captured.err
    lines = captured.out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gaussian/pgd/seed0")
    assert f"test NLL {result['test_nll']:.4f}" in lines[0]


def test_quiet_mode_prints_only_the_summary_line(tiny_config, tmp_path, capsys):
    run(tiny_config("lift"), tmp_path, sinks=[ConsoleSink(progress=False)])
    captured = capsys.readouterr()
    assert captured.err == ""
    assert len(captured.out.strip().splitlines()) == 1
