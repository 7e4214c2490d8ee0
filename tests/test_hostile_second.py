"""The second hostile pass: nothing mixed, nothing overwritten. Two processes never share a run
or report folder, committed results are never overwritten by a smoke test, a refused command
leaves the folder's records, a user's config folder is checked before it is used, sweeps have
one rule and a preview, damaged report data and run files are one line naming the file, absurd
sizes are refused by an estimate that bounds the run, and what a run says is honest."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_cli import FAST, icnn_bench

from icnn_bench import cli, registry
from icnn_bench.api import load_run
from icnn_bench.errors import ConfigError, DataError
from icnn_bench.report import make_report
from icnn_bench.run_folder import REPORT_LOCK, FolderInUse, owned
from icnn_bench.runner import run, run_seeds

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "extending"
SINGLE = ["experiment=single", "target=gaussian", "method=pgd", *FAST]


@pytest.fixture(autouse=True)
def _package_conf_only(monkeypatch):
    monkeypatch.setattr(registry, "_added", [])
    yield
    registry._read.cache_clear()


def hold(folder: Path, name: str = ".lock") -> subprocess.Popen:
    """Another process holding `folder`'s lock until killed."""
    code = (
        "import sys, time; from pathlib import Path; from icnn_bench.run_folder import owned\n"
        "with owned(Path(sys.argv[1]), name=sys.argv[2]):\n"
        "    print('held', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), name], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


# ------------------------------------------------------------------ 1. one process a folder


def test_a_run_folder_held_by_another_process_is_refused_then_taken_over_once_it_dies(tmp_path):
    folder = tmp_path / "run"
    holder = hold(folder)
    try:
        done = icnn_bench(*SINGLE, f"hydra.run.dir={folder}", cwd=tmp_path)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is in use by process {holder.pid}" in lines[0]
        assert not (folder / "config.yaml").exists() and not (folder / ".hydra").exists()
    finally:
        holder.kill()
        holder.wait()
    done = icnn_bench(*SINGLE, f"hydra.run.dir={folder}", cwd=tmp_path)  # a dead holder's lock
    assert done.returncode == 0, done.stderr[-1500:]
    assert json.loads((folder / "result.json").read_text())["status"] == "ok"


def test_two_runs_started_together_into_one_folder_never_mix(tmp_path):
    folder = tmp_path / "run"
    script = "from icnn_bench.cli import main; main()"
    command = [sys.executable, "-c", script, *SINGLE, f"hydra.run.dir={folder}"]
    procs = [
        subprocess.Popen(
            [*command, f"trainer.lr={lr}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lr in (0.01, 0.02)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes  # one ran, the other was refused
    config = yaml.safe_load((folder / "config.yaml").read_text())
    overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
    assert f"trainer.lr={config['trainer']['lr']}" in overrides  # one run's files only
    again = icnn_bench(*SINGLE, f"trainer.lr={config['trainer']['lr']}",
                       f"hydra.run.dir={folder}", cwd=tmp_path)  # fmt: skip
    assert "[finished earlier; kept]" in again.stdout


def test_a_report_folder_in_use_is_refused(tmp_path, tiny_config):
    run(tiny_config("pgd"), tmp_path / "sweep" / "a")
    holder = hold(tmp_path / "sweep", REPORT_LOCK)
    try:
        with pytest.raises(FolderInUse, match=f"report folder .* in use by process {holder.pid}"):
            make_report(tmp_path / "sweep")
    finally:
        holder.kill()
        holder.wait()
    assert make_report(tmp_path / "sweep").n_ok == 1


def test_one_process_cannot_take_a_folder_twice(tmp_path):
    with owned(tmp_path), pytest.raises(FolderInUse):  # noqa: SIM117 (the point is nesting)
        with owned(tmp_path):
            pass


# ------------------------------------------------------------------ 2. committed results


def test_a_smoke_test_with_extra_overrides_never_writes_into_results(tmp_path):
    script = ROOT / "scripts" / "reproduce.py"
    table = ROOT / "results" / "paper_1d" / "table.md"
    before = table.stat().st_mtime_ns
    done = subprocess.run(
        [sys.executable, str(script), "--only", "paper_1d", "--jobs", "1",
         "--runs", str(tmp_path / "runs"), "--extra", "target=gaussian", "method=pgd",
         "seed=0", *FAST],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert table.stat().st_mtime_ns == before
    assert (tmp_path / "runs" / "reports" / "paper_1d" / "table.md").exists()


def test_a_finished_report_folder_it_did_not_make_is_kept_without_force(tmp_path):
    script = ROOT / "scripts" / "reproduce.py"
    results = tmp_path / "results"
    (results / "paper_1d").mkdir(parents=True)
    (results / "paper_1d" / "table.md").write_text("committed\n")
    done = subprocess.run(
        [sys.executable, str(script), "--only", "paper_1d", "--results", str(results),
         "--runs", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "pass --force" in done.stderr
    assert (results / "paper_1d" / "table.md").read_text() == "committed\n"
    assert not (tmp_path / "runs").exists()  # refused before any sweep


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--only", "bogus"], "no such table"),
        (["--jobs", "0"], "give at least 1"),
        (["--extra", "trainer.stpes=3"], "did you mean trainer.steps"),
    ],
)
def test_reproduce_refuses_bad_arguments_in_one_line(tmp_path, args, says):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reproduce.py"), *args, "--dry-run"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and says in done.stderr


# ------------------------------------------------------------------ 3. refused reruns


def test_a_refused_rerun_leaves_the_finished_runs_records(tmp_path):
    folder = tmp_path / "run"
    assert icnn_bench(*SINGLE, f"hydra.run.dir={folder}", cwd=tmp_path).returncode == 0
    records = {p.name: p.read_bytes() for p in (folder / ".hydra").iterdir()}
    assert set(records) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    done = icnn_bench(*SINGLE, "model.width=12", f"hydra.run.dir={folder}", cwd=tmp_path)
    assert done.returncode == 2 and "holds a finished run of another config" in done.stderr
    assert {p.name: p.read_bytes() for p in (folder / ".hydra").iterdir()} == records


# ------------------------------------------------------------------ 4, 5, 10. config folders


def user_folder(tmp_path: Path, name: str = "my stuff") -> Path:
    folder = tmp_path / name
    (folder / "method").mkdir(parents=True)
    (folder / "expw.py").write_text((EXAMPLE / "expw.py").read_text())
    (folder / "method" / "expw.yaml").write_text((EXAMPLE / "method" / "expw.yaml").read_text())
    return folder


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        ("method/pgd.yaml", "name: pgd\n_target_: expw.ExpWeights\n", "has the name of a packaged"),
        ("target/gumbel.yaml", "name: gumbel\n", "has the name of a packaged target"),
        ("method/listy.yaml", "- a\n- b\n", "is not a mapping of settings"),
        ("method/broken.yaml", "name: [\n", "line 2: malformed YAML"),
        ("method/nameless.yaml", "_target_: expw.ExpWeights\n", "has no `name:`"),
    ],
)
def test_a_users_config_folder_is_checked_in_one_line(tmp_path, file, content, says):
    folder = user_folder(tmp_path)
    (folder / file).parent.mkdir(exist_ok=True)
    (folder / file).write_text(content)
    done = icnn_bench("--config-dir", str(folder), "method=expw", cwd=tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr


@pytest.mark.parametrize("name", ["my stuff", "données"])
def test_config_folders_with_spaces_or_accents_work(tmp_path, name):
    folder = user_folder(tmp_path, name)
    sweep = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    done = icnn_bench("--config-dir", str(folder), "-m", "target=gaussian", "method=expw",
                      "seed=0", *FAST, sweep, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    assert (tmp_path / "sweep" / "table.md").exists()


def test_a_users_module_never_hides_an_installed_package(tmp_path):
    folder = user_folder(tmp_path)
    (folder / "zuko.py").write_text("raise ImportError('the user file, not zuko')\n")
    flow = [
        "experiment=single",
        "target=moons",
        "method=maf_reference",
        "trainer.steps=3",
        "trainer.eval_every=3",
        "data.n_train=300",
        "data.n_val=50",
        "data.n_test=50",
    ]
    done = icnn_bench("--config-dir", str(folder), *flow, f"hydra.run.dir={tmp_path / 'run'}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]


# ------------------------------------------------------------------ 6. one rule for sweeps


def test_a_comma_list_sweeps_with_or_without_dash_m(tmp_path):
    done = icnn_bench(*SINGLE, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/result.json")) == [
        "0-gaussian-pgd-seed0",
        "1-gaussian-pgd-seed1",
    ]


@pytest.mark.parametrize("flag", [[], ["-m"]])
def test_a_sweep_is_previewed_with_cfg(tmp_path, flag):
    done = icnn_bench(*flag, *SINGLE, "seed=0,1", "--cfg", "job", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith("# a sweep of 2 jobs over: seed=0,1")
    assert yaml.safe_load(done.stdout)["seed"] == 0  # the first job's config
    assert not any(tmp_path.iterdir())  # nothing ran


# ------------------------------------------------------------------ 7. damaged report data


LIFT = {"body": [8, 8, 12]}


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for method in ("pgd", "lift"):
        for seed in (0, 1):
            config = {"seed": seed, "device": "cpu",
                      "data": {"n_train": 300, "n_val": 50, "n_test": 50, "seed": seed},
                      "target": {"name": "gaussian", "params": {}},
                      "model": {"name": "icnn", "width": 8, "depth": 2, "alpha": 0.02},
                      "log_z": {"estimator": "quadrature", "train_nodes": 64, "eval_nodes": 500},
                      "method": {"name": method, **(LIFT if method == "lift" else {})},
                      "trainer": {"steps": 6, "eval_every": 3, "batch_size": 32}}  # fmt: skip
            assert run(config, root / f"{method}{seed}")["status"] == "ok"
    out = tmp_path_factory.mktemp("report")
    make_report(root, out)
    return out


@pytest.mark.parametrize("file", ["curves.csv.gz", "densities.csv.gz", "runs.csv"])
@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "no_columns"])
def test_damaged_report_data_is_one_line_naming_the_file(report_folder, tmp_path, file, damage):
    folder = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(report_folder), str(folder)], check=True)
    data = (folder / file).read_bytes()
    if damage == "no_columns":
        text = "a,b\n1,2\n"
        data = gzip.compress(text.encode()) if file.endswith(".gz") else text.encode()
    else:
        data = {"truncated": data[: len(data) // 2], "empty": b"",
                "random": os.urandom(500)}[damage]  # fmt: skip
    (folder / file).write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", "from icnn_bench.cli import report_main; report_main()",
         "--redraw", str(folder)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-500:] + done.stderr[-1500:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and file in lines[0], done.stderr


def test_the_report_command_on_a_file_says_so(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(SystemExit) as stop:
        cli.report_main([str(tmp_path / "x.csv")])
    assert stop.value.code == 2 and "is a file" in capsys.readouterr().err


def test_a_report_that_cannot_draw_a_figure_leaves_no_stale_one(tmp_path, tiny_config):
    run(tiny_config("pgd"), tmp_path / "a")
    (tmp_path / "by_dimension.png").write_bytes(b"an old figure")  # from another sweep
    make_report(tmp_path)
    assert not (tmp_path / "by_dimension.png").exists()


# ------------------------------------------------------------------ 8. damaged run folders


@pytest.fixture
def finished(tmp_path, tiny_config):
    folder = tmp_path / "run"
    assert run(tiny_config("lift"), folder)["status"] == "ok"
    return folder


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("weights.pt", b""),
        ("weights.pt", b"\x80\x02garbage"),
        ("weights.pt", "truncate"),
        ("weights.pt", "foreign"),
        ("config.yaml", b"\x00\xff\xfe binary"),
        ("config.yaml", b"- a list\n"),
        ("config.yaml", b"target: [\n"),
    ],
)
def test_load_run_on_damaged_files_is_one_line_naming_the_file(finished, file, content):
    path = finished / file
    if content == "truncate":
        content = path.read_bytes()[:200]
    elif content == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
        content = None
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((DataError, FileNotFoundError)) as caught:
        load_run(finished)
    assert file in str(caught.value) and "\n" not in str(caught.value)


def test_a_run_written_with_the_older_pinned_pool_key_loads(finished):
    config = yaml.safe_load((finished / "config.yaml").read_text())
    config["method"]["pinned_pool"] = config["trainer"].pop("eval_pool", "split")
    (finished / "config.yaml").write_text(yaml.safe_dump(config))
    model = load_run(finished)
    assert torch.isfinite(model.log_prob(torch.linspace(-1, 1, 5))).all()
    assert model.config["trainer"]["eval_pool"] == "split"


# ------------------------------------------------------------------ 9. absurd sizes


@pytest.mark.parametrize(
    ("override", "key"),
    [("trainer.steps=100000000000", "trainer.steps"),
     ("log_z.eval_nodes=1000000000000", "log_z.eval_nodes"),
     ("model.width=4000", "model.width")],
)  # fmt: skip
def test_absurd_sizes_are_refused_naming_the_setting(tmp_path, override, key):
    done = icnn_bench("experiment=single", "method=lift", override,
                      f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "failed" and result["error"].startswith(f"{key}=")
    assert "needs about" in result["error"]


def test_a_sweep_with_an_absurd_size_is_refused_before_any_job(tmp_path):
    done = icnn_bench("-m", "target=gaussian", "method=pgd", "seed=0",
                      "trainer.steps=100000000000", f"hydra.sweep.dir={tmp_path / 's'}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and "trainer.steps=100000000000 needs about" in done.stderr


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_the_memory_estimate_bounds_what_a_lift_run_takes(tmp_path):
    code = (
        "import sys, json, copy; from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from conftest import TINY; from icnn_bench.runner import run, memory_estimate\n"
        "from icnn_bench.build import TrainerSettings, target_from_config\n"
        "c = copy.deepcopy(TINY); c['model']['width'] = 320\n"
        "c['method'] = {'name': 'lift', 'body': [64, 64, 96]}\n"
        "c['trainer'].update(steps=3, eval_every=3, checkpoint_every=1)\n"
        "def hwm():\n"
        "    status = Path('/proc/self/status').read_text().split('VmHWM:')[1]\n"
        "    return int(status.split()[0])\n"
        "Path('/proc/self/clear_refs').write_text('5')\n"  # the peak from here on
        "base = hwm()\n"
        "r = run(c, Path(sys.argv[1]))\n"
        "peak = hwm()\n"
        "need = memory_estimate(c, target_from_config(c['target']),"
        " TrainerSettings.from_dict(c['trainer']))\n"
        "print(json.dumps({'status': r['status'], 'grew': (peak - base) * 1024,"
        " 'estimate': sum(need.values())}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["status"] == "ok"
    assert measured["estimate"] >= measured["grew"] > 0.2 * measured["estimate"]


def test_a_seed_list_with_a_repeat_is_refused(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="names seed 0 twice"):
        run_seeds({**tiny_config("pgd"), "seeds": [0, 0]}, tmp_path)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ 11. honest runs


def test_each_seed_of_a_seeds_job_has_its_own_wall_time(tiny_config, tmp_path):
    config = {**tiny_config("pgd", trainer={"steps": 60, "vectorize": False}), "seeds": [0, 1, 2]}
    started = time.perf_counter()
    results = run_seeds(config, tmp_path)
    total = time.perf_counter() - started
    walls = [r["wall_s"] for r in results]
    assert sum(walls) <= total * 1.05  # not cumulative: the seeds' times add up to the job's
    assert all(w > 0 for w in walls)


def test_an_authors_regime_sweep_names_its_regime_and_sampler_warnings(tmp_path):
    sweep = tmp_path / "sweep"
    fast = [o for o in FAST if not o.startswith("log_z.")]
    done = icnn_bench("-m", "regime=authors", "target=gaussian", "method=pgd", "seed=0",
                      *fast, "log_z.train_samples=64", "log_z.warmup_steps=2", "log_z.max_steps=1",
                      "log_z.kl_threshold=-1000", f"hydra.sweep.dir={sweep}",
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    result = json.loads(next(sweep.glob("*/result.json")).read_text())
    assert result["regime"] == "authors" and result.get("sampler_note")
    assert "warning: the sampler ended" in done.stdout  # on the console, not only in the file
    table = (sweep / "table.md").read_text()
    assert table.startswith("# icnn-bench comparison: sweep (training regime: authors)")
    assert "learned sampler fell short" in table


@pytest.mark.parametrize(("regime", "folder"), [("authors", "single_authors"), ("exact", "single")])
def test_the_default_folder_names_a_regime_other_than_ours(regime, folder):
    from icnn_bench.compose import compose_with_hydra

    cfg = compose_with_hydra(["experiment=single", f"regime={regime}"])
    assert str(cfg.hydra.run.dir).startswith(f"outputs/{folder}/")
    assert str(cfg.hydra.sweep.dir).startswith(f"outputs/{folder}/")


def test_wandb_honours_its_own_environment(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from icnn_bench.sinks.wandb import WandbSink

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    sink = WandbSink(tiny_config("pgd"), tmp_path / "run", mode="offline")
    assert sink.dir == tmp_path / "elsewhere" and sink.project == "theirs"
    mine = WandbSink(tiny_config("pgd"), tmp_path / "run", mode="offline", dir=tmp_path / "d",
                     project="mine")  # fmt: skip
    assert mine.dir == tmp_path / "d" and mine.project == "mine"
