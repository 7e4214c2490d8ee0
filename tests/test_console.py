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


def test_sweep_progress_counts_seed_runs_and_extrapolates_from_this_sweeps_runs(
    tmp_path, monkeypatch
):
    import os
    import time

    from icnn_bench.sweep_state import ENV_VAR, SweepState

    monkeypatch.setenv(ENV_VAR, "")  # restored after the test

    start = time.time() - 60  # this sweep started a minute ago
    for name in ("0/seed0", "0/seed1", "1/seed0"):  # jobs of seeds, one result per seed
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "result.json").write_text("{}")
    earlier = start - 3600  # two runs finished by an earlier invocation of the same sweep
    for name in ("0/seed0", "0/seed1"):
        os.utime(tmp_path / name / "result.json", (earlier, earlier))
    # the state travels to job processes in one environment variable
    SweepState(launcher="host:1", jobs=2, start=start, axes=("seed",)).to_environ()
    state = SweepState.from_environ()
    assert state.axes == ("seed",) and state.jobs == 2
    assert state.progress(None) is None  # no sweep folder: no progress part
    text = state.progress(tmp_path, runs_per_job=5)
    assert text.startswith("3 of 10 runs, ETA ")
    # one run in 60 s, 7 left: about 7 minutes, not the 2.3 a count of all three would give
    assert text == "3 of 10 runs, ETA 7 min"


def test_a_sweep_line_names_its_swept_values(tiny_config, tmp_path, capsys):
    sink = ConsoleSink(progress=False, swept={"method": "pgd", "trainer.lr": 0.003})
    run(tiny_config("pgd"), tmp_path, sinks=[sink])
    line = capsys.readouterr().out.strip()
    assert "trainer.lr=0.003" in line and "method=" not in line  # the label already names it
