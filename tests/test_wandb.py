"""logger=wandb: offline W&B runs under the run folder hold what the run folder's files hold;
wandb missing or a bad mode never costs a run its files. Offline only: no server is needed."""

from __future__ import annotations

import copy
import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from conftest import TINY
from hydra.types import RunMode
from test_cli import FAST, icnn_bench

from icnn_bench import runner as train
from icnn_bench.errors import ConfigError
from icnn_bench.job import JobContext, make_sinks, sweep_group
from icnn_bench.sinks import wandb as wandb_sink
from icnn_bench.sinks.wandb import MISSING, WandbSink

QUIET = {
    "WANDB_SILENT": "true",
    "WANDB_CONSOLE": "off",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB__DISABLE_STATS": "true",  # x_disable_stats: no system-metrics sampler
    "WANDB__DISABLE_META": "true",
}


def quiet_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for key, value in QUIET.items():
        monkeypatch.setenv(key, value)
    for key in ("CONFIG_DIR", "CACHE_DIR", "DATA_DIR", "ARTIFACT_DIR"):
        monkeypatch.setenv(f"WANDB_{key}", str(home / key.lower()))
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RUN_GROUP"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(wandb_sink, "_warned", set())
    monkeypatch.setattr(wandb_sink, "_unreachable", False)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path_factory):
    quiet_env(monkeypatch, tmp_path_factory.getbasetemp() / "wandb-home")


# -- reading an offline run: its transaction log (run-<id>.wandb) ------------------------


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))


def read_offline_run(folder: Path) -> dict[str, Any]:
    """The run record, config, history rows, merged summary and exit code of an offline run.
    The .wandb file is a LevelDB-style log (32 KiB blocks of checksum, length, type, data)
    after a 7-byte W&B header, holding protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    out: dict[str, Any] = {"history": [], "summary": {}, "exit_code": None}
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):  # FULL or LAST: a whole record; FIRST/MIDDLE: more to come
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        pending = b""
        kind_name = record.WhichOneof("record_type")
        if kind_name == "run":
            out["run"] = record.run
            out["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind_name == "history":
            out["history"].append(_items(record.history.item))
        elif kind_name == "summary":
            out["summary"].update(_items(record.summary.update))
        elif kind_name == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def _items(items) -> dict[str, Any]:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


# -- the sink through train.run -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """One process, two W&B runs: a tiny finished run, then one failing before training."""
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("two_runs")
    runs = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        quiet_env(monkeypatch, root / "home")
        for name, seed in (("ok", 0), ("failed", -1)):  # seed=-1: ConfigError, no training
            config = {**copy.deepcopy(TINY), "seed": seed}
            sink = WandbSink(config, root / name, mode="offline", tags=["smoke"])
            runs.append((root / name, train.run(config, root / name, [sink])))
    return runs


def test_offline_run_lands_in_the_run_folder_and_holds_the_metrics(two_runs):
    run_dir, result = two_runs[0]
    assert result["status"] == "ok"
    (folder,) = offline_runs(run_dir)
    written = json.loads((run_dir / "result.json").read_text())
    logged = read_offline_run(folder)
    assert logged["run"].display_name == run_dir.name
    assert logged["run"].project == "icnn-bench" and logged["run"].job_type == "train"
    assert list(logged["run"].tags) == ["smoke", "gaussian", "icnn", "pgd"]
    assert logged["config"]["trainer"]["steps"] == 20  # the resolved run config
    summary = logged["summary"]
    assert summary["test_nll"] == pytest.approx(written["test_nll"], rel=1e-12)
    assert summary["status"] == "ok" and summary["steps"] == 20 and summary["error"] is None
    rows = logged["history"]
    assert [r["_step"] for r in rows if "eval/val_nll" in r] == [0, 10, 20]
    assert [r["_step"] for r in rows if "train/loss" in r] == list(range(1, 21))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evals = [r["eval/val_nll"] for r in rows if "eval/val_nll" in r]
    assert evals == pytest.approx(metrics["val_nll"].tolist(), rel=1e-6)
    last = next(r for r in rows if r["_step"] == 20)
    assert any(key.startswith("density") for key in last)  # the density figure, at the end
    assert list((folder / "files" / "media" / "images").glob("density_*.png"))
    assert logged["exit_code"] == 0


def test_each_run_in_one_process_gets_its_own_wandb_run(two_runs):
    (ok_dir, _), (failed_dir, failed) = two_runs
    folders = [offline_runs(ok_dir), offline_runs(failed_dir)]
    assert [len(f) for f in folders] == [1, 1]
    ids = {read_offline_run(f[0])["run"].run_id for f in folders}
    assert len(ids) == 2
    # the failed run still shows up in W&B, as failed, with its one-line error
    logged = read_offline_run(folders[1][0])
    assert failed["status"] == "failed" and "seed=-1" in failed["error"]
    assert logged["summary"]["status"] == "failed"
    assert logged["summary"]["error"] == failed["error"]
    assert logged["exit_code"] == 1
    assert json.loads((failed_dir / "result.json").read_text())["status"] == "failed"


def test_missing_wandb_warns_once_and_the_run_keeps_its_files(
    tmp_path, tiny_config, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    config = tiny_config()
    sinks = [WandbSink(config, tmp_path / "a", mode="offline"), WandbSink(config, tmp_path / "b")]
    assert all(s.run is None for s in sinks)
    result = train.run(config, tmp_path / "a", sinks[:1])
    assert result["status"] == "ok"
    assert json.loads((tmp_path / "a" / "result.json").read_text())["status"] == "ok"
    assert not (tmp_path / "a" / "wandb").exists()
    assert capsys.readouterr().err.splitlines() == [f"icnn-bench: warning: {MISSING}"]


def test_a_wandb_that_cannot_start_or_breaks_costs_one_warning(
    tmp_path, tiny_config, monkeypatch, capsys
):
    """A stand-in wandb module: an online init that times out, then a run whose log fails."""
    inits: list[dict[str, Any]] = []
    finished: list[int] = []

    def unreachable(**kwargs: Any) -> None:
        inits.append(kwargs)
        raise TimeoutError("init timed out after 30 s")

    fake = SimpleNamespace(Settings=dict, init=unreachable)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = tiny_config()
    for name in ("a", "b"):  # the second run does not wait on the server again
        result = train.run(
            config, tmp_path / name, [WandbSink(config, tmp_path / name, mode="online")]
        )
        assert result["status"] == "ok" and (tmp_path / name / "result.json").exists()
    assert len(inits) == 1 and inits[0]["settings"] == {"init_timeout": 30.0, "silent": True}
    assert capsys.readouterr().err.splitlines() == [
        "icnn-bench: warning: W&B run did not start (init timed out after 30 s); "
        "logging to files only",
        "icnn-bench: warning: W&B skipped: it did not start earlier in this process; "
        "logging to files only",
    ]

    def broken(**kwargs: Any) -> SimpleNamespace:
        def log(*args: Any, **kwargs: Any) -> None:
            raise OSError("service went away")

        return SimpleNamespace(log=log, finish=lambda exit_code: finished.append(exit_code))

    fake.init = broken
    result = train.run(config, tmp_path / "c", [WandbSink(config, tmp_path / "c", mode="offline")])
    assert result["status"] == "ok" and (tmp_path / "c" / "result.json").exists()
    assert finished == [1]  # given up on at the first failure, and closed
    assert capsys.readouterr().err.splitlines() == [
        "icnn-bench: warning: W&B failed logging an evaluation (service went away); "
        "logging to files only"
    ]


def test_a_bad_mode_is_a_one_line_config_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as error:
        WandbSink({}, tmp_path, mode="onlin")
    assert str(error.value) == (
        "logger.mode=onlin is not a W&B mode; choose one of: online, offline, disabled"
    )
    monkeypatch.setenv("WANDB_MODE", "dry")
    with pytest.raises(ConfigError, match=r"^WANDB_MODE=dry is not a W&B mode"):
        make_sinks({"logger": {"name": "wandb", "mode": None}}, tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the environment decides when mode is null
    assert WandbSink({}, tmp_path).mode == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert WandbSink({}, tmp_path).mode == "offline"


def test_sinks_from_the_logger_config_and_one_group_per_sweep(tmp_path):
    sweep = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir="out/quick/2026-01"))
    assert sweep_group(sweep, "quick") == "quick-2026-01"
    assert sweep_group(SimpleNamespace(mode=RunMode.RUN, sweep=sweep.sweep), "single") is None
    files = make_sinks({"logger": {"name": "files", "progress": False}}, tmp_path)
    assert [type(s).__name__ for s in files] == ["ConsoleSink"]
    logger = {"name": "wandb", "progress": False, "project": "p", "group": None, "tags": ["x"]}
    console, sink = make_sinks(
        {"logger": logger}, tmp_path / "run", JobContext(group="quick-2026-01")
    )
    assert type(console).__name__ == "ConsoleSink"
    assert (sink.project, sink.group, sink.tags) == ("p", "quick-2026-01", ["x"])
    assert (sink.mode, sink.dir) == ("offline", tmp_path / "run")  # the defaults
    named = make_sinks(
        {"logger": {**logger, "group": "mine"}}, tmp_path, JobContext(group="quick-2026-01")
    )
    assert named[1].group == "mine"


# -- the command line ------------------------------------------------------------------


def test_cli_single_run_with_logger_wandb_writes_offline_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "one"
    done = icnn_bench(
        "experiment=single",
        "logger=wandb",
        "target=gaussian",
        "method=pgd",
        f"hydra.run.dir={run_dir}",
        *FAST,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr
    result = json.loads((run_dir / "result.json").read_text())
    (folder,) = offline_runs(run_dir)
    logged = read_offline_run(folder)
    assert logged["summary"]["test_nll"] == pytest.approx(result["test_nll"], rel=1e-12)
    assert logged["run"].run_group == ""  # a single run has no group
    assert logged["config"]["logger"]["name"] == "wandb"


def test_cli_bad_mode_fails_before_training_with_one_line(tmp_path):
    done = icnn_bench(
        "experiment=single",
        "logger=wandb",
        "logger.mode=onlne",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "icnn-bench: logger.mode=onlne is not a W&B mode; choose one of: online, offline, disabled"
    )
    assert not (tmp_path / "result.json").exists()


# -- sweeps, resume, weights: what a W&B dashboard is used through ----------------------


def _kinds(folder: Path) -> list[str]:
    """The record kinds of an offline run's transaction log, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = folder.glob("run-*.wandb")
    data = path.read_bytes()
    block, pos, pending, kinds = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(pending)
        pending = b""
        kinds.append(record.WhichOneof("record_type"))
    return kinds


def test_a_wandb_sweep_marks_its_swept_settings_and_logs_its_report(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for key in ("WANDB_SILENT", "WANDB_CONSOLE"):  # the quiet default is ours, not the suite's
        monkeypatch.delenv(key, raising=False)
    sweep = tmp_path / "sweep"
    done = icnn_bench(
        "-m", "logger=wandb", "target=gaussian", "method=pgd", "seed=0",
        "trainer.lr=0.01,0.02", *FAST, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wandb:" not in done.stdout + done.stderr  # W&B stays quiet
    names, lrs = [], []
    for run_dir in sorted(p.parent for p in sweep.glob("*/result.json")):
        (folder,) = offline_runs(run_dir)
        logged = read_offline_run(folder)
        names.append(logged["run"].display_name)
        lrs.append(logged["config"]["swept/trainer.lr"])
        assert logged["config"]["trainer"]["lr"] == lrs[-1]  # the nested config is whole
        assert "artifact" not in _kinds(folder)  # a sweep's weights stay in the run folder
    assert sorted(lrs) == [0.01, 0.02]
    assert all("trainer.lr=" in name for name in names)
    (report_run,) = offline_runs(sweep)
    logged = read_offline_run(report_run)
    assert logged["run"].job_type == "report" and logged["run"].run_group
    summary_of_run = logged["summary"]  # W&B flattens a logged table into path, nrows, ...
    assert summary_of_run["report/summary/_type"] == "table-file"
    table_file = report_run / "files" / summary_of_run["report/summary/path"]
    table = json.loads(table_file.read_text())
    summary = pd.read_csv(sweep / "summary.csv")
    assert table["columns"] == list(summary.columns)
    assert len(table["data"]) == len(summary)  # the comparison, read back from W&B's files
    assert summary_of_run["figures/loss_curves/_type"] == "image-file"
    assert "artifact" in _kinds(report_run)
    # the leaderboard too: its tables and each column's mean rank
    assert summary_of_run["report/ranks/_type"] == "table-file"
    ranks = pd.read_csv(sweep / "ranks.csv")
    for label in ("pgd [trainer.lr=0.01]", "pgd [trainer.lr=0.02]"):
        assert summary_of_run[f"mean_rank/{label}"] == pytest.approx(ranks[label].mean())


def test_a_resumed_run_continues_its_wandb_run(tiny_config, tmp_path):
    pytest.importorskip("wandb")
    from test_resume import InterruptAt

    config = tiny_config("pgd", trainer={"steps": 40, "eval_every": 10, "checkpoint_every": 15})
    with pytest.raises(KeyboardInterrupt):
        train.run(config, tmp_path, [WandbSink(config, tmp_path, mode="offline"), InterruptAt(20)])
    train.run(config, tmp_path, [WandbSink(config, tmp_path, mode="offline")])
    first, second = offline_runs(tmp_path)
    a, b = read_offline_run(first), read_offline_run(second)
    assert a["run"].run_id == b["run"].run_id  # W&B's resume: the same run
    resumed_steps = [h["_step"] for h in b["history"] if "_step" in h]
    assert resumed_steps and min(resumed_steps) > 15  # history is not replayed


def test_a_single_run_logs_its_weights_as_an_artifact(tiny_config, tmp_path):
    pytest.importorskip("wandb")
    config = tiny_config("pgd")
    train.run(config, tmp_path, [WandbSink(config, tmp_path, mode="offline", log_weights=True)])
    (folder,) = offline_runs(tmp_path)
    assert "artifact" in _kinds(folder)
