"""Plain config dicts -> objects. Shared by the runner and `load_run`; knows nothing of Hydra."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from icnn_bench import checks
from icnn_bench.errors import ConfigError
from icnn_bench.methods import build_method
from icnn_bench.methods.base import WeightSource
from icnn_bench.models.base import DensityModel
from icnn_bench.models.ebm import EnergyModel
from icnn_bench.models.flow import ConvexPotentialFlow, LogDetSettings, PotentialBlock
from icnn_bench.models.icnn import ICNNSpec, init_params
from icnn_bench.objectives.importance import FlowProposal, GaussianProposal, ImportanceLogZ
from icnn_bench.objectives.quadrature import QuadratureLogZ
from icnn_bench.targets import Target, build_target

MODELS = ("icnn", "cpflow", "maf_reference")
REFERENCE_MODELS = ("maf_reference",)  # no weight source: the method setting does not apply
LOG_Z_ESTIMATORS = ("auto", "quadrature", "importance")
PROPOSALS = ("gaussian", "flow")
DEVICES = ("auto", "cpu", "cuda")
RESUME = ("auto", "never")
NAN_POLICIES = ("stop", "skip_step")


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
        if self.vectorize not in (True, False, "auto"):
            raise ConfigError(
                f"trainer.vectorize={self.vectorize!r}; choose one of: true, false, auto"
            )
        if self.eval_every > self.steps:
            raise ConfigError(
                f"trainer.eval_every={self.eval_every} exceeds trainer.steps={self.steps}"
            )

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TrainerSettings:
        known = [f.name for f in fields(cls)]
        for key in cfg:
            if key not in known:
                raise ConfigError(f"trainer.{key} is not a setting; known: {', '.join(known)}")
        return cls(**cfg)


def resolve_device(name: str) -> torch.device:
    checks.choice("device", name, DEVICES)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but this machine has no CUDA device; use device=cpu")
    return torch.device(name)


def target_from_config(target_cfg: dict[str, Any]) -> Target:
    return build_target(target_cfg["name"], target_cfg.get("params"))


def spec_from_config(model_cfg: dict[str, Any], dim: int) -> ICNNSpec:
    return ICNNSpec(
        dim=dim,
        width=model_cfg["width"],
        depth=model_cfg["depth"],
        alpha=model_cfg["alpha"],
        normalise_positive=bool(model_cfg.get("normalise_positive", False)),
    )


def log_z_from_config(
    model_cfg: dict[str, Any], target: Target, train: Tensor | None = None, seed: int = 0
) -> QuadratureLogZ | ImportanceLogZ:
    """The configured log Z estimator. Importance sampling fits its proposal to `train`
    (None: a placeholder whose buffers are then loaded from a saved run)."""
    log_z_cfg = dict(model_cfg.get("log_z") or {})
    estimator = log_z_cfg.pop("estimator", "auto")
    if estimator == "auto":  # exact quadrature wherever it applies
        estimator = "quadrature" if target.dim <= 2 and target.box() is not None else "importance"
    if estimator not in LOG_Z_ESTIMATORS:
        raise ConfigError(
            f"model.log_z.estimator={estimator!r}; choose one of: {', '.join(LOG_Z_ESTIMATORS)}"
        )
    if estimator == "importance":
        return _importance_from_config(log_z_cfg, target, train, seed)
    for key in ("proposal", "widen", "flow", "train_samples", "eval_samples"):
        log_z_cfg.pop(key, None)  # importance-sampling settings, unused by quadrature
    box = target.box()
    if box is None:
        raise ConfigError(f"target {target.name} has no quadrature box; quadrature needs one")
    try:
        return QuadratureLogZ(box, **log_z_cfg)
    except TypeError as error:
        raise ConfigError(f"model.log_z: {error}") from None


def _importance_from_config(
    log_z_cfg: dict[str, Any], target: Target, train: Tensor | None, seed: int
) -> ImportanceLogZ:
    proposal = log_z_cfg.pop("proposal", "gaussian")
    sampler: GaussianProposal | FlowProposal
    if proposal not in PROPOSALS:
        raise ConfigError(
            f"model.log_z.proposal={proposal!r}; choose one of: {', '.join(PROPOSALS)}"
        )
    widen = log_z_cfg.pop("widen", 1.5)
    flow_cfg = log_z_cfg.pop("flow", None) or {}
    for key in ("train_nodes", "eval_nodes", "train_rule"):
        log_z_cfg.pop(key, None)  # quadrature settings, unused here
    if proposal == "flow":
        try:
            sampler = FlowProposal(target.dim, **flow_cfg)
        except TypeError as error:
            raise ConfigError(f"model.log_z.flow: {error}") from None
    elif train is None:
        dim = target.dim
        sampler = GaussianProposal(torch.zeros(dim), torch.eye(dim))
    else:
        sampler = GaussianProposal.from_data(train, widen)
    try:
        return ImportanceLogZ(sampler, seed=seed, **log_z_cfg)
    except TypeError as error:
        raise ConfigError(f"model.log_z: {error}") from None


def model_name(config: dict[str, Any]) -> str:
    name = config["model"].get("name", "icnn")
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return name


def method_label(config: dict[str, Any]) -> str | None:
    """The comparison column of a run: its constraint method, or the reference model's name."""
    name = config.get("model", {}).get("name")
    return name if name in REFERENCE_MODELS else config.get("method", {}).get("name")


def model_from_config(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    """The configured model, initialised deterministically from `seed`. `train` feeds
    data-dependent initialisation (proposals, ActNorm); None when a saved state follows."""
    builders = {
        "icnn": energy_model_from_config,
        "cpflow": cpflow_from_config,
        "maf_reference": maf_from_config,
    }
    return builders[model_name(config)](config, target, seed, train)


def energy_model_from_config(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> EnergyModel:
    """The ICNN EBM with its weight source, initialised deterministically from `seed`."""
    model_cfg = config["model"]
    spec = spec_from_config(model_cfg, target.dim)
    generator = _generator(seed)
    torch.manual_seed(seed)  # the lift's body draws its init from the global stream
    source = _weight_source(config, spec, generator)
    return EnergyModel(spec, source, log_z_from_config(model_cfg, target, train, seed))


def cpflow_from_config(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> ConvexPotentialFlow:
    """CP-Flow: `blocks` convex potentials, each with its own weight source."""
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
    torch.manual_seed(seed)
    blocks = [
        PotentialBlock(spec, _weight_source(config, spec, generator)) for _ in range(blocks_n)
    ]
    flow = ConvexPotentialFlow(
        blocks, actnorm=model_cfg.get("actnorm", True), log_det=log_det, seed=seed
    )
    if train is not None:
        flow.initialise_actnorms(train[:4096])
    return flow


def maf_from_config(
    config: dict[str, Any], target: Target, seed: int, train: Tensor | None = None
) -> DensityModel:
    from icnn_bench.models.maf import MAFReference

    model_cfg = config["model"]
    torch.manual_seed(seed)  # zuko initialises from the global stream
    return MAFReference(
        target.dim,
        transforms=model_cfg.get("transforms", 5),
        hidden=tuple(model_cfg.get("hidden", (128, 128))),
    )


def _weight_source(
    config: dict[str, Any], spec: ICNNSpec, generator: torch.Generator
) -> WeightSource:
    init = init_params(spec, config["model"].get("init", "folded_normal"), generator)
    method_cfg = dict(config["method"])
    method_name = method_cfg.pop("name")
    try:
        return build_method(method_name, spec, init, **method_cfg)
    except TypeError as error:
        raise ConfigError(f"method {method_name}: {error}") from None


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
