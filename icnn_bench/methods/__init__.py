"""Constraint methods: built from their config, whose `_target_` names the class."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from icnn_bench import registry
from icnn_bench.errors import ConfigError
from icnn_bench.methods.base import ConstraintMethod
from icnn_bench.models.icnn import ICNNSpec


def method_names() -> list[str]:
    """Every constraint method a config can name (the package's and any added folder's);
    options that only select a reference model (no `_target_`) are not methods."""
    return [n for n in registry.options("method") if "_target_" in method_settings(n)]


def method_settings(name: str) -> dict[str, Any]:
    """A method option's settings as a run composes them (defaults list and interpolations
    resolved against the default regime); ConfigError naming the options for no such one."""
    from icnn_bench.compose import compose

    if name not in registry.options("method"):
        choices = ", ".join(registry.options("method"))
        raise ConfigError(f"unknown method {name!r}; choose one of: {choices}")
    return compose([f"method={name}"])["method"]


def build_method(
    method: str | dict[str, Any],
    spec: ICNNSpec,
    init: dict[str, Tensor],
    generator: torch.Generator | None = None,
    **options: Any,
) -> ConstraintMethod:
    """The method a config (or a name and its options) describes, around initial tensors
    `init`. Its option YAML supplies `_target_` and the defaults the config does not set.
    A method that draws its own initial values gets `generator` (a fixed seed if None)."""
    config = {"name": method, **options} if isinstance(method, str) else dict(method)
    name = config.get("name")
    settings = {**method_settings(str(name)), **config} if "_target_" not in config else config
    cls = registry.resolve(registry.target_of("method", settings), "method")
    if not (isinstance(cls, type) and issubclass(cls, ConstraintMethod)):
        raise ConfigError(f"method {name}: _target_ {cls!r} is not a ConstraintMethod subclass")
    kwargs = {k: v for k, v in settings.items() if k not in ("name", "_target_", "init")}
    if "generator" in inspect.signature(cls).parameters:
        kwargs["generator"] = generator if generator is not None else torch.Generator()
    try:
        return cls(spec, init, **kwargs)
    except TypeError as error:
        raise ConfigError(f"method {name}: {error}") from None


__all__ = ["ConstraintMethod", "build_method", "method_names", "method_settings"]
