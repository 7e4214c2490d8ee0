"""The config schema as explicit checks: each names the key, the value and what is allowed,
in one line (a ConfigError), before any work is done. YAML booleans are not numbers here."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from icnn_bench.errors import ConfigError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer(
    key: str, value: Any, minimum: int = 1, optional: bool = False, maximum: int | None = None
) -> None:
    """An int >= minimum (and <= maximum if given; or null when optional)."""
    if optional and value is None:
        return
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if maximum is not None:
            allowed = f"an integer from {minimum} to {maximum}"
        raise ConfigError(f"{key}={value!r} must be {allowed}{' or null' if optional else ''}")


def number(
    key: str, value: Any, minimum: float = 0.0, strict: bool = True, optional: bool = False
) -> None:
    """A finite number > minimum (>= when not strict), or null when optional."""
    if optional and value is None:
        return
    if not is_number(value) or value < minimum or (strict and value == minimum):
        bound = f"{'>' if strict else '>='} {minimum:g}"
        if minimum == -math.inf:
            allowed = "a finite number"
        elif strict and minimum == 0:
            allowed = "a positive number"
        else:
            allowed = f"a finite number {bound}"
        raise ConfigError(f"{key}={value!r} must be {allowed}{' or null' if optional else ''}")


def choice(key: str, value: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}; choose one of: {', '.join(allowed)}")


def boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")


def int_list(key: str, value: Any) -> None:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(is_int(v) and v > 0 for v in value)
    ):
        shown = list(value) if isinstance(value, list | tuple) else value
        raise ConfigError(f"{key}={shown!r} must be a non-empty list of positive ints")
