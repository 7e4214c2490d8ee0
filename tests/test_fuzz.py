"""Random override sets, valid and not, through the real config tree: every run either
succeeds or fails with one line and a result.json saying why; a set Hydra cannot compose
gets one line from the CLI's check before any job starts."""

from __future__ import annotations

import json
import random

import pytest

from icnn_bench.command_line import composition_problem
from icnn_bench.compose import compose
from icnn_bench.runner import run

SMALL = [
    "experiment=single",
    "trainer.steps=6",
    "trainer.eval_every=3",
    "trainer.batch_size=32",
    "data.n_train=300",
    "data.n_val=60",
    "data.n_test=100",
    "model.width=8",
    "model.depth=2",
    "method.body=[8,8]",
]
TARGETS = ["gaussian", "gumbel", "beta", "moons", "correlated_gaussian"]
METHODS = ["pgd", "softplus", "lift", "lift_nocond"]
MODELS = ["icnn", "cpflow"]
# (override, applies to) pairs: values of every kind, most of them impossible
PERTURBATIONS = [
    ("trainer.lr=-1", None),
    ("trainer.lr=abc", None),
    ("trainer.lr=1e6", None),  # may diverge: recorded, not raised
    ("trainer.steps=0", None),
    ("trainer.steps=2.5", None),
    ("trainer.steps=true", None),
    ("trainer.batch_size=100000", None),
    ("trainer.eval_every=100", None),
    ("trainer.grad_clip=0", None),
    ("trainer.grad_clip=null", None),
    ("trainer.weight_decay=-1", None),
    ("trainer.nan_policy=maybe", None),
    ("trainer.nan_policy=skip_step", None),
    ("trainer.checkpoint_every=2", None),
    ("trainer.checkpoint_every=0", None),
    ("trainer.probe_every=3", None),
    ("trainer.probe_batches=1", None),
    ("trainer.lr_halve_every=-2", None),
    ("model.width=0", None),
    ("model.width=x", None),
    ("model.depth=-1", None),
    ("model.alpha=-1", None),
    ("model.alpha=abc", None),
    ("model.init=xavier", None),
    ("log_z.train_nodes=1", "icnn"),
    ("log_z.estimator=exact", "icnn"),
    ("log_z.proposal=uniform", "icnn"),
    ("model.blocks=0", "cpflow"),
    ("model.log_det=magic", "cpflow"),
    ("model.actnorm=maybe", "cpflow"),
    ("method.body=[0]", "lift"),
    ("method.body=[]", "lift"),
    ("method.slack_init=abc", "lift"),
    ("method.emit=some", "lift"),
    ("method.pool_norm=3", "lift"),
    ("device=tpu", None),
    ("seed=-3", None),
    ("seed=x", None),
    ("data.n_train=0", None),
    ("data.n_train=10", None),
    ("data.n_test=abc", None),
]
NOT_COMPOSABLE = ["trainer.stpes=3", "model.widht=3", "seedd=1", "trainer.lr=[1,", "+trainer=3"]


def random_overrides(rng: random.Random) -> list[str]:
    model, method = rng.choice(MODELS), rng.choice(METHODS)
    if method != "lift" and method != "lift_nocond":
        small = [o for o in SMALL if not o.startswith("method.body")]
    else:
        small = list(SMALL)
    chosen = [f"target={rng.choice(TARGETS)}", f"model={model}", f"method={method}", *small]
    applicable = [o for o, where in PERTURBATIONS if where in (None, model, method.split("_")[0])]
    chosen += rng.sample(applicable, rng.choice([0, 1, 1, 2]))
    return chosen


@pytest.mark.parametrize("case", range(36))
def test_random_override_sets_succeed_or_fail_in_one_line(case, tmp_path):
    rng = random.Random(1000 + case)
    overrides = random_overrides(rng)
    assert composition_problem(overrides) is None, overrides
    result = run(compose(overrides), tmp_path)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["status"] == result["status"] in ("ok", "failed", "diverged"), overrides
    if result["status"] == "ok":
        assert on_disk["test_nll"] is not None, overrides
        return
    error = on_disk["error"]
    assert error and "\n" not in error, (overrides, error)
    assert "traceback" not in error and not (tmp_path / "error.txt").exists(), (overrides, error)


@pytest.mark.parametrize("bad", NOT_COMPOSABLE)
def test_override_sets_hydra_cannot_compose_get_one_line(bad):
    problem = composition_problem([*SMALL, "target=gaussian", bad])
    assert problem and "\n" not in problem
    key = bad.lstrip("+").split("=")[0]
    assert key in problem or "parse" in problem, problem  # it names what is wrong
