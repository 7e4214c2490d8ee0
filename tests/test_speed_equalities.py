"""Speed changes that must not change numbers, pinned: the evaluation computes log Z and the
grid's energy once per pinned emission, a target's seeded draw reseeds the CPU stream only,
and the default sweep runs its jobs on every core."""

from __future__ import annotations

import torch

from icnn_bench.evaluation import validation_metrics
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.runner import prepare
from icnn_bench.targets import build_target


def test_an_evaluation_remembers_nothing_that_changes_its_numbers(
    tiny_config, tmp_path, monkeypatch
):
    job = prepare(tiny_config("lift"), tmp_path)
    pool = job.split.train
    with_memo = validation_metrics(job.model, job.split, pool, job.target)
    calls = []
    original = EnergyModel._memo

    def fresh(self):  # no memory between calls: every energy and log Z computed again
        self.__dict__.pop("_pinned_memo", None)
        calls.append(1)
        return original(self)

    monkeypatch.setattr(EnergyModel, "_memo", fresh)
    without = validation_metrics(job.model, job.split, pool, job.target)
    assert with_memo == without and calls


def test_the_grid_energy_is_computed_once_per_evaluation(tiny_config, tmp_path, monkeypatch):
    from icnn_bench.models import icnn

    job = prepare(tiny_config("pgd"), tmp_path)
    rows = []
    original = icnn.energy
    monkeypatch.setattr(
        "icnn_bench.models.ebm.icnn.energy",
        lambda params, x, spec: rows.append(x.shape[0]) or original(params, x, spec),
    )
    validation_metrics(job.model, job.split, job.split.train, job.target)
    grid = job.model.log_z_estimator.eval_grid.shape[0]
    assert sorted(rows) == sorted([job.split.val.shape[0], grid])  # not 3x the grid


def test_a_seeded_target_draw_is_the_one_torch_manual_seed_gives():
    target = build_target("gumbel", None)
    torch.manual_seed(123)
    expected = target._dist.sample((50,))
    before = torch.get_rng_state()
    drawn = target.sample(50, seed=123)
    assert torch.equal(drawn.reshape(-1), expected.reshape(-1))
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is left as it was


def test_the_default_sweep_uses_every_core():
    from hydra import compose, initialize_config_dir

    from icnn_bench.cli import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == -1


def test_building_a_model_leaves_torchs_global_stream_as_it_was(tiny_config):
    """The lift's body and zuko's sampler draw their inits from a seeded global stream that
    is put back afterwards: a build changes no other draw, and the same seed builds the same."""
    from icnn_bench.build import model_from_config

    target = build_target("gumbel")
    config = tiny_config("lift")
    config["log_z"] = {"estimator": "learned_sampler", "warmup_steps": 0}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = model_from_config(config, target, seed=4)
    assert torch.equal(torch.rand(3), expected)
    second = model_from_config(config, target, seed=4)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = model_from_config(config, target, seed=5)
    assert not torch.equal(first.method.readout, other.method.readout)
