"""Compose a config from overrides: the one place outside the CLI's own `@hydra.main` where Hydra
builds a config, for the CLI's checks, the Python API, scripts and tests alike.

The package's `conf/` is searched after the user's folders that `registry.add_search_dir`
registered (the CLI registers those of `--config-dir` and `hydra.searchpath`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from icnn_bench import registry

__all__ = ["compose", "compose_with_hydra", "quoted", "searchpath_override"]


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config a run with these overrides gets, resolved, as plain Python (no Hydra keys).

    A sweep's comma lists are not expanded here: give one value per key."""
    cfg = compose_with_hydra(overrides)
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    config.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(config), resolve=True)  # type: ignore[return-value]


def compose_with_hydra(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config with its `hydra` node (launcher, sweeper, run and sweep folders),
    unresolved; raises Hydra's errors as they are (the CLI words them)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = list(overrides)
    extra = searchpath_override()
    if extra and not any(o.startswith("hydra.searchpath=") for o in overrides):
        overrides.append(extra)
    with initialize_config_dir(str(registry.PACKAGE_CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides, return_hydra_config=True)


def searchpath_override() -> str | None:
    """`hydra.searchpath=[...]` for the user's config folders registered so far, or None."""
    folders = [quoted(f"file://{folder}") for folder in registry.search_dirs()[:-1]]
    return f"hydra.searchpath=[{','.join(folders)}]" if folders else None


def quoted(text: str) -> str:
    """A value for a Hydra override, quoted so that spaces and any character pass."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
