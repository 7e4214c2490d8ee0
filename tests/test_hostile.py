"""What a hostile user tries: damaged files, full or read-only disks, killed launchers,
Ctrl-C, clusters that are not there, merged sweeps, corrupted run folders, absurd values.
Each ends in one clear line, a non-zero exit where the command failed, a result.json that
says why, and no finished work lost."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_cli import FAST, icnn_bench
from test_resume import comparable

from icnn_bench import cli, command_line, io
from icnn_bench.report import make_report
from icnn_bench.run_folder import CHECKPOINT
from icnn_bench.runner import run

# ------------------------------------------------------------------ damaged checkpoints


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_checkpoint_is_set_aside_and_the_run_restarts(
    tiny_config, tmp_path, damage, capsys
):
    config = tiny_config("pgd", trainer={"steps": 40, "checkpoint_every": 10})
    whole = run(config, tmp_path / "whole")
    folder = tmp_path / "cut"
    from test_resume import InterruptAt

    with pytest.raises(KeyboardInterrupt):
        run(config, folder, sinks=[InterruptAt(30)])
    data = (folder / CHECKPOINT).read_bytes()
    (folder / CHECKPOINT).write_bytes(
        {"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(999)}[damage]
    )
    resumed = run(config, folder)
    note = capsys.readouterr().out
    assert "unreadable checkpoint kept aside as" in note
    assert "resuming from the previous checkpoint (step 10)" in note  # the one before it
    assert resumed["status"] == "ok" and resumed["resumed_from_step"] == 10
    assert comparable(resumed) == comparable(whole)
    assert len(list(folder.glob(f"{CHECKPOINT}.damaged-*"))) == 1  # kept, not deleted


def test_with_no_good_checkpoint_the_run_starts_over_and_says_so(tiny_config, tmp_path, capsys):
    config = tiny_config("pgd", trainer={"steps": 20, "checkpoint_every": 10})
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / CHECKPOINT).write_bytes(b"\x00not a checkpoint")
    result = run(config, tmp_path)
    assert "starting the run over" in capsys.readouterr().out
    assert result["status"] == "ok" and "resumed_from_step" not in result


# ------------------------------------------------------------------ disks


def test_an_output_folder_below_a_file_is_one_line_and_nothing_is_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    done = icnn_bench(f"hydra.sweep.dir={blocker}/sweep", *FAST, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"cannot write to {blocker}/sweep" in done.stderr and "is a file" in done.stderr


def test_a_full_disk_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(
        command_line.shutil, "disk_usage", lambda path: type("U", (), {"free": 1e6})()
    )
    problem = command_line.output_problem(tmp_path / "sweep")
    assert problem.startswith(f"cannot write to {tmp_path / 'sweep'}: only 1 MB free")
    assert not (tmp_path / "sweep").exists()


def test_a_report_that_cannot_be_written_is_one_line(tmp_path, tiny_config, monkeypatch, capsys):
    run(tiny_config("pgd"), tmp_path / "sweep" / "0-run")

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "_atomic", full)
    with pytest.raises(SystemExit) as exited:
        cli.report_main([str(tmp_path / "sweep")])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err


def test_written_files_follow_the_umask(tiny_config, tmp_path):
    previous = os.umask(0o022)
    try:
        run(tiny_config("pgd"), tmp_path)
    finally:
        os.umask(previous)
    for name in ("result.json", "metrics.csv", "config.yaml", "weights.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == io.FILE_MODE, name
    assert 0o666 & ~previous == io.FILE_MODE


# ------------------------------------------------------------------ processes


def _launched_by(pid: int) -> list[int]:
    """Processes whose environment names `pid` as their sweep's launcher."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(b"ICNN_BENCH_SWEEP=") and f':{pid}"'.encode() in v for v in environ):
            found.append(int(entry.name))
    return found


LONG = ["trainer.steps=20000", "trainer.eval_every=1000", "trainer.checkpoint_every=100"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a shell's background job inherits SIGINT ignored, and Python then keeps it ignored:
    # give the child the terminal's Ctrl-C, as a user at a terminal has it
    script = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from icnn_bench.cli import main; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path_glob, root: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not list(root.glob(path_glob)):
        if time.monotonic() > deadline:
            pytest.fail(f"no {path_glob} below {root} after {seconds} s")
        time.sleep(0.1)


def test_killing_a_joblib_sweep_stops_its_workers(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "target=gaussian", "method=pgd", "seed=0,1", *FAST[1:], *LONG]
    args += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    process = _start(args, tmp_path)
    _wait_for(f"*/{CHECKPOINT}", sweep)
    workers = _launched_by(process.pid)
    assert workers, "no worker process found"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 15
    while _launched_by(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _launched_by(process.pid), "workers still running after the launcher died"


def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path):
    run_dir = tmp_path / "one"
    process = _start(
        ["experiment=single", "method=pgd", *FAST[1:], *LONG, f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    _wait_for(CHECKPOINT, run_dir)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "run the same command again to resume" in lines[0]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and "resumes it from step" in result["error"]


def test_a_requeued_submitit_job_resumes_from_its_checkpoint(tmp_path):
    """SLURM requeues a preempted or timed-out job by signalling it (SIGUSR2): submitit's
    local executor does the same, and the job continues from its checkpoint."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    steps = ["trainer.steps=800", "trainer.eval_every=400", "trainer.checkpoint_every=50"]
    args = ["-m", "target=gaussian", "method=pgd", "seed=0", *FAST[1:], *steps]
    args += ["hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"]
    process = _start(args, tmp_path)
    _wait_for(f"*/{CHECKPOINT}", sweep)
    jobs = [p for p in _launched_by(process.pid) if b"SUBMITIT_LOCAL_JOB_ID" in _environ(p)]
    task = [p for p in jobs if b"SUBMITIT_LOCAL_GLOBALID" in _environ(p)]
    assert task, "no submitit task process found"
    os.kill(task[0], signal.SIGUSR2)
    process.communicate(timeout=300)
    (result_path,) = sweep.glob("*/result.json")
    result = json.loads(result_path.read_text())
    assert result["status"] == "ok" and result["resumed_from_step"] >= 50


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


@pytest.mark.parametrize("launcher", ["slurm", "slurm_gpu"])
def test_the_slurm_presets_requeue_on_time_out(launcher):
    """As composed (slurm_gpu builds on slurm): submitit requeues a timed-out job, which
    then resumes from its checkpoint (test_a_requeued_submitit_job_resumes_...)."""
    from icnn_bench.compose import compose_with_hydra

    composed = compose_with_hydra([f"hydra/launcher={launcher}", "experiment=paper_1d_gpu"])
    assert composed.hydra.launcher._target_.endswith("SlurmLauncher")
    assert composed.hydra.launcher.max_num_timeout > 0


def test_slurm_without_slurm_is_one_line(tmp_path):
    done = icnn_bench("hydra/launcher=slurm", cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no sbatch on this machine's PATH" in done.stderr


# ------------------------------------------------------------------ sweeps and reports


def test_a_sweep_that_cannot_succeed_is_stopped_before_any_job(tmp_path):
    done = icnn_bench("model.width=-3", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "model.width=-3 must be a positive integer" in done.stderr
    assert not (tmp_path / "s").exists()  # nothing launched, no multirun.yaml


def test_a_setting_the_sweep_varies_is_left_to_the_runs(tmp_path):
    done = icnn_bench(
        "-m", "model.width=-3,8", "method=pgd", "target=gaussian", "seed=0", *FAST[:-4],
        "trainer.batch_size=32", f"hydra.sweep.dir={tmp_path}/s", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1  # one run of two failed: the sweep ran, and says so
    assert done.stderr.strip().splitlines()[-1].startswith("icnn-bench: 1 of 2 runs failed")


def fake_run(root: Path, name: str, seed: int, kl: float, method: str = "pgd") -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"seed": seed, "target": {"name": "gumbel"}, "method": {"name": method}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    result = {"target": "gumbel", "model": "icnn", "method": method, "seed": seed}
    (folder / "result.json").write_text(json.dumps({**result, "status": "ok", "kl": kl}))
    return folder


def test_merged_sweeps_count_each_cell_and_seed_once(tmp_path):
    for sweep in ("a", "b"):
        for seed in (0, 1, 2):
            fake_run(tmp_path / sweep, f"pgd-{seed}", seed, 0.1 + seed)
            fake_run(tmp_path / sweep, f"lift-{seed}", seed, 0.05 + seed, "lift")
        time.sleep(0.01)
    report = make_report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert set(summary["kl_n"]) == {3}
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert set(paired.loc[paired.metric == "kl", "n_pairs"]) == {3}
    assert (
        "6 duplicate run(s) of a cell and seed left out (kept the newest" in report.table_markdown
    )


@pytest.mark.parametrize(
    "content",
    [os.urandom(64), b"[1, 2, 3]", b"null", b"", b'{"status": "ok", "seed": "zero"}', b'{"stat'],
)
def test_an_unreadable_result_is_counted_and_named(tmp_path, content):
    for seed in (0, 1, 2):
        fake_run(tmp_path, f"pgd-{seed}", seed, 0.1)
    (tmp_path / "pgd-1" / "result.json").write_bytes(content)
    report = make_report(tmp_path)
    assert "1 run folder(s) with an unreadable result.json, not counted in any cell: pgd-1" in (
        report.table_markdown
    )
    assert "1 unreadable" in report.table_markdown
    assert pd.read_csv(tmp_path / "summary.csv")["kl_n"].tolist() == [2]


@pytest.mark.parametrize("name", ["metrics.csv", "config.yaml"])
@pytest.mark.parametrize("content", [os.urandom(200), b"step,val_nll\n"])
def test_corrupted_run_files_do_not_break_the_report(tmp_path, name, content):
    for seed in (0, 1):
        fake_run(tmp_path, f"pgd-{seed}", seed, 0.1)
    (tmp_path / "pgd-0" / name).write_bytes(content)
    report = make_report(tmp_path)
    assert report.n_runs == 2


def test_a_folder_of_unrelated_configs_is_not_a_sweep(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("learning_rate: 3\nlayers: [1, 2]\n")
    with pytest.raises(SystemExit) as exited:
        cli.report_main([str(tmp_path)])
    assert exited.value.code == 2 and "no run folders below" in capsys.readouterr().err
    assert not (tmp_path / "table.md").exists()


def test_the_copy_of_a_config_that_wandb_keeps_is_not_a_run(tmp_path):
    fake_run(tmp_path, "pgd-0", 0, 0.1)
    files = tmp_path / "pgd-0" / "wandb" / "run-20261201_000000-abc" / "files"
    files.mkdir(parents=True)
    config = yaml.safe_load((tmp_path / "pgd-0" / "config.yaml").read_text())
    (files / "config.yaml").write_text(yaml.safe_dump(config))  # W&B's copy, dicts and all
    report = make_report(tmp_path)
    assert report.n_runs == 1
    assert "running" not in report.table_markdown and "duplicate" not in report.table_markdown


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    "override,message",
    [
        ("seed=18446744073709551615", "seed=18446744073709551615 must be an integer from 0 to"),
        ("logger.progress=banana", "logger.progress='banana'; choose one of: auto, true, false"),
        ("logger.progress=no", "logger.progress='no'; choose one of"),
        ("model.width=1000000", "model.width=1000000 needs about"),
        ("data.n_train=100000000000", "data.n_train=100000000000 needs about"),
    ],
)
def test_absurd_values_are_one_line_naming_the_setting(tmp_path, override, message):
    done = icnn_bench("experiment=single", *FAST, override, cwd=tmp_path)
    assert done.returncode in (1, 2)
    said = done.stdout + done.stderr
    assert message in said, said[-1500:]
    assert "Traceback" not in said
    run_dir = [
        line.split(": ", 1)[1] for line in said.splitlines() if line.startswith("run folder")
    ]
    if run_dir:  # the run was made: its result.json says why it failed
        result = json.loads((Path(tmp_path) / run_dir[0] / "result.json").read_text())
        assert result["status"] == "failed" and message in result["error"]
