"""Plain config dicts -> objects. Shared by the runner and `load_run`; knows nothing of Hydra.

What a config names is looked up through `registry`: a target's, model's or method's
`_target_` (its own, else its option YAML's) is the callable that builds it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from icnn_bench import checks, registry
from icnn_bench.devices import isolated_global_rng
from icnn_bench.errors import ConfigError
from icnn_bench.methods import build_method
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.base import DensityModel
from icnn_bench.models.icnn import ICNNSpec, init_params
from icnn_bench.targets import Target, build_target

LOG_Z_ESTIMATORS = ("auto", "quadrature", "importance", "learned_sampler")
# what each estimator reads of log_z's settings (auto holds both families')
QUADRATURE_SETTINGS = ("train_rule", "train_nodes", "eval_nodes")
IMPORTANCE_SETTINGS = ("proposal", "widen", "flow", "train_samples", "eval_samples")
PROPOSALS = ("gaussian", "flow")
RESUME = ("auto", "never")
NAN_POLICIES = ("stop", "skip_step")


def check_vectorize(value: Any) -> None:
    """trainer.vectorize is true, false or auto (checked here only)."""
    if value not in (True, False, "auto"):
        raise ConfigError(f"trainer.vectorize={value!r}; choose one of: true, false, auto")


@dataclass(frozen=True)
class TrainerSettings:
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    grad_clip: float | None = 1.0
    eval_every: int = 200
    weight_decay: float = 0.0
    lr_halve_every: int | None = None  # multiply the learning rate by 1/2 every this many steps
    probe_every: int | None = None  # cross-covariance probe cadence in steps (null: off)
    probe_batches: int = 32  # K probe batches per probe
    probe_permutations: int = 0  # permutation test of the probe pairing (0: off)
    checkpoint_every: int | None = 1000  # steps between checkpoints (null: none)
    resume: str = "auto"  # auto: continue from the run folder's checkpoint | never: start over
    nan_policy: str = "stop"  # stop: non-finite loss/gradient -> diverged | skip_step
    vectorize: bool | str = "auto"  # train a cell's `seeds` as one batched model (auto: on GPU)
    eval_pool: str | int = "split"  # evaluation emission: the split, its first n, or "batch"
    eval_batch: int = 256  # eval_pool=batch: a fresh random batch of this many rows

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_every"):
            checks.integer(f"trainer.{key}", getattr(self, key))
        checks.number("trainer.lr", self.lr)
        checks.number("trainer.grad_clip", self.grad_clip, optional=True)
        checks.number("trainer.weight_decay", self.weight_decay, strict=False)
        for key in ("lr_halve_every", "probe_every", "checkpoint_every"):
            checks.integer(f"trainer.{key}", getattr(self, key), optional=True)
        checks.integer("trainer.probe_batches", self.probe_batches, minimum=2)
        checks.integer("trainer.probe_permutations", self.probe_permutations, minimum=0)
        checks.choice("trainer.resume", self.resume, RESUME)
        checks.choice("trainer.nan_policy", self.nan_policy, NAN_POLICIES)
        check_vectorize(self.vectorize)
        pool_ok = self.eval_pool in ("split", "batch") or (
            checks.is_int(self.eval_pool) and self.eval_pool > 0
        )
        if not pool_ok:
            raise ConfigError(
                f"trainer.eval_pool={self.eval_pool!r}; use split, batch or a positive integer"
            )
        checks.integer("trainer.eval_batch", self.eval_batch)
        if self.eval_every > self.steps:  # a short run evaluates at its end (and at 0)
            object.__setattr__(self, "eval_every", self.steps)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainerSettings:
        known = [f.name for f in fields(cls)]
        for key in cfg:
            if key not in known:
                raise ConfigError(f"trainer.{key} is not a setting; known: {', '.join(known)}")
        return cls(**cfg)


def target_from_config(target_cfg: dict[str, Any]) -> Target:
    return build_target(target_cfg["name"], target_cfg.get("params"), target_cfg.get("_target_"))


def spec_from_config(model_cfg: dict[str, Any], dim: int) -> ICNNSpec:
    return ICNNSpec(
        dim=dim,
        width=model_cfg["width"],
        depth=model_cfg["depth"],
        alpha=model_cfg["alpha"],
        normalise_positive=bool(model_cfg.get("normalise_positive", False)),
    )


# ---------------------------------------------------------------- log Z


def log_z_from_config(
    log_z_cfg: dict[str, Any] | None, target: Target, train: Tensor | None = None, seed: int = 0
):
    """The configured log Z estimator (config group `log_z`). Importance sampling fits its
    proposal to `train` (None: a placeholder whose buffers are then loaded from a saved run).
    `auto` picks quadrature where it applies, else importance sampling, each with its own
    settings of the ones auto holds."""
    cfg = dict(log_z_cfg or {"estimator": "auto"})
    estimator = cfg.pop("estimator", "auto")
    checks.choice("log_z.estimator", estimator, LOG_Z_ESTIMATORS)
    if estimator == "auto":
        exact = target.dim <= 2 and target.box() is not None
        estimator = "quadrature" if exact else "importance"
        unknown = [k for k in cfg if k not in QUADRATURE_SETTINGS + IMPORTANCE_SETTINGS]
        if unknown:
            raise ConfigError(f"log_z.{unknown[0]} is not a setting of log_z=auto")
        own = QUADRATURE_SETTINGS if estimator == "quadrature" else IMPORTANCE_SETTINGS
        cfg = {k: v for k, v in cfg.items() if k in own}
    elif estimator in ("quadrature", "importance"):
        # log_z.estimator=... set by key keeps the settings of the group it replaced
        own = QUADRATURE_SETTINGS if estimator == "quadrature" else IMPORTANCE_SETTINGS
        other = [k for k in cfg if k in QUADRATURE_SETTINGS + IMPORTANCE_SETTINGS and k not in own]
        if other:
            raise ConfigError(
                f"log_z.{other[0]} is not a setting of {estimator} log Z (choose an estimator "
                f"by its group, e.g. log_z={estimator}, not log_z.estimator=)"
            )
    if estimator == "importance":
        return _importance_from_config(cfg, target, train, seed)
    if estimator == "learned_sampler":
        return _learned_from_config(cfg, target, seed)
    from icnn_bench.log_z.quadrature import QuadratureLogZ

    box = target.box()
    if box is None:
        raise ConfigError(f"target {target.name} has no quadrature box; quadrature needs one")
    try:
        return QuadratureLogZ(box, **cfg)
    except TypeError as error:
        raise ConfigError(f"log_z (quadrature): {error}") from None


def _learned_from_config(cfg: dict[str, Any], target: Target, seed: int):
    """The authors' estimator; evaluated exactly by quadrature where it applies (d <= 2)."""
    from icnn_bench.log_z.learned import LearnedSamplerLogZ
    from icnn_bench.log_z.quadrature import QuadratureLogZ

    eval_nodes = cfg.pop("eval_nodes", 8000)
    reference = None
    if target.dim <= 2 and target.box() is not None:
        reference = QuadratureLogZ(target.box(), train_nodes=2, eval_nodes=eval_nodes)
    try:
        return LearnedSamplerLogZ(target.dim, reference=reference, seed=seed, **cfg)
    except TypeError as error:
        raise ConfigError(f"log_z (learned_sampler): {error}") from None


def _importance_from_config(cfg: dict[str, Any], target: Target, train: Tensor | None, seed: int):
    from icnn_bench.log_z.importance import FlowProposal, GaussianProposal, ImportanceLogZ

    proposal = cfg.pop("proposal", "gaussian")
    checks.choice("log_z.proposal", proposal, PROPOSALS)
    widen = cfg.pop("widen", 1.5)
    flow_cfg = cfg.pop("flow", None) or {}
    if proposal == "flow":
        try:
            sampler = FlowProposal(target.dim, **flow_cfg)
        except TypeError as error:
            raise ConfigError(f"log_z.flow: {error}") from None
    elif train is None:
        dim = target.dim
        sampler = GaussianProposal(torch.zeros(dim), torch.eye(dim))
    else:
        sampler = GaussianProposal.from_data(train, widen)
    try:
        return ImportanceLogZ(sampler, seed=seed, **cfg)
    except TypeError as error:
        raise ConfigError(f"log_z (importance): {error}") from None


# ---------------------------------------------------------------- models


def uses_methods(config: dict[str, Any]) -> bool:
    """Whether the configured model takes its ICNN tensors from a constraint method (a
    reference flow does not: its comparison column is its own name)."""
    builder = registry.resolve(registry.target_of("model", config["model"]), "model")
    return getattr(builder, "uses_methods", True)


def method_label(config: dict[str, Any]) -> str | None:
    """The comparison column of a run: its constraint method, or a reference model's name."""
    model = config.get("model") or {}
    try:
        if model.get("name") is not None and not uses_methods(config):
            return model.get("name")
    except ConfigError:
        pass  # an unknown model: the run fails with that message; label it by its method
    return (config.get("method") or {}).get("name")


def model_from_config(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    """The configured model, initialised deterministically from `seed`. `train` feeds
    data-dependent initialisation (proposals, ActNorm); None when a saved state follows."""
    builder = registry.resolve(registry.target_of("model", config["model"]), "model")
    model = builder(config, target, seed, train)
    model.method_name = method_label(config)
    return model


def build_energy_model(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    """The ICNN EBM with its constraint method, initialised deterministically from `seed`."""
    from icnn_bench.models.ebm import EnergyModel

    model_cfg = config["model"]
    spec = spec_from_config(model_cfg, target.dim)
    generator = _generator(seed)
    with seeded_global_rng(seed):  # the lift's body and zuko's sampler draw their inits there
        method = _method(config, spec, generator)
        log_z = log_z_from_config(config.get("log_z"), target, train, seed)
    return EnergyModel(spec, method, log_z)


def build_cpflow(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    """CP-Flow: `blocks` convex potentials, each with its own constraint method."""
    from icnn_bench.models.cpflow import ConvexPotentialFlow, LogDetSettings, PotentialBlock

    model_cfg = config["model"]
    spec = spec_from_config(model_cfg, target.dim)
    blocks_n = model_cfg.get("blocks", 1)
    checks.integer("model.blocks", blocks_n)
    checks.boolean("model.actnorm", model_cfg.get("actnorm", True))
    known = {f for f in LogDetSettings.__dataclass_fields__}
    log_det = LogDetSettings(
        kind=model_cfg.get("log_det", "auto"),
        **{k: v for k, v in model_cfg.items() if k in known and k != "kind"},
    )
    generator = _generator(seed)
    with seeded_global_rng(seed):
        blocks = [PotentialBlock(spec, _method(config, spec, generator)) for _ in range(blocks_n)]
    flow = ConvexPotentialFlow(
        blocks, actnorm=model_cfg.get("actnorm", True), log_det=log_det, seed=seed
    )
    if train is not None:
        flow.initialise_actnorms(train[:4096])
    return flow


def build_ot(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    """Two convex potentials for the W2 dual (psi: the map, phi: its conjugate's argmax),
    each with its own constraint method of the configured kind."""
    from icnn_bench.models.cpflow import PotentialBlock
    from icnn_bench.models.transport import DualPotentials
    from icnn_bench.targets.transport import TransportPair

    if not isinstance(target, TransportPair):
        raise ConfigError(
            f"model=ot_dual needs a transport pair target (gaussian_pair, mixture_pair); "
            f"got target {target.name!r}"
        )
    model_cfg = config["model"]
    spec = spec_from_config(model_cfg, target.dim)
    inner_steps = model_cfg.get("inner_steps", 10)
    checks.integer("model.inner_steps", inner_steps)
    inner_lr = model_cfg.get("inner_lr", 1e-3)
    checks.number("model.inner_lr", inner_lr)
    generator = _generator(seed)
    with seeded_global_rng(seed):
        psi = PotentialBlock(spec, _method(config, spec, generator))
        phi = PotentialBlock(spec, _method(config, spec, generator))
    return DualPotentials(psi, phi, target, inner_steps, inner_lr, seed)


def build_maf(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    from icnn_bench.models.maf import MAFReference

    model_cfg = config["model"]
    with seeded_global_rng(seed):  # zuko initialises from the global stream
        return MAFReference(
            target.dim,
            transforms=model_cfg.get("transforms", 5),
            hidden=tuple(model_cfg.get("hidden", (128, 128))),
        )


build_maf.uses_methods = False  # a reference flow: no constrained weights, no method


def _method(config: dict[str, Any], spec: ICNNSpec, generator: torch.Generator) -> ConstraintMethod:
    """The configured method around initial tensors drawn from `generator`; a method whose
    recipe comes with its initialisation names it (`method.init`, e.g. pgd_hk)."""
    model_cfg, method_cfg = config["model"], config["method"]
    init = init_params(
        spec,
        method_cfg.get("init") or model_cfg.get("init", "folded_normal"),
        generator,
        model_cfg.get("free_init", "uniform"),
    )
    return build_method(method_cfg, spec, init, generator=generator)


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """torch's global stream seeded with `seed` for code that draws from it (nn.Linear's
    init, zuko), and put back as it was afterwards: building a model changes no other draw."""
    with isolated_global_rng():
        torch.manual_seed(seed)
        yield


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
