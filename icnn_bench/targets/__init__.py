"""Targets by name: a target's config option (conf/target/<name>.yaml) names its factory."""

from __future__ import annotations

from typing import Any

from icnn_bench import registry
from icnn_bench.errors import ConfigError
from icnn_bench.targets.base import Split, Target, TargetError


def target_names() -> list[str]:
    return registry.options("target")


def build_target(
    name: str, params: dict[str, Any] | None = None, factory: str | None = None
) -> Target:
    """The target `name` with `params`; `factory` is its `_target_` (default: its option's)."""
    if factory is None:
        try:
            factory = registry.target_of("target", {"name": name})
        except ConfigError as error:  # an unknown name: the message lists the known ones
            raise TargetError(str(error)) from None
    build = registry.resolve(factory, "target")
    try:
        target = build(**dict(params or {}))
    except TypeError as error:  # an unknown parameter name
        raise TargetError(f"target {name}: {error}") from None
    if not isinstance(target, Target):
        raise TargetError(f"target {name}: {factory} built {type(target).__name__}, not a Target")
    return target


__all__ = ["Split", "Target", "TargetError", "build_target", "target_names"]
