"""What can be named in a config: the options of each config group and the classes they build.

Every option is a YAML file in a config folder: the package's own `conf/`, and any folder a
user adds (the CLI adds the folders of `--config-dir` and `hydra.searchpath`). A method's or
target's YAML names what it builds with `_target_` (a dotted path, `package.module.Name`); an
added folder is also put on `sys.path` (after what is installed, so that a file there never
hides a package), so a YAML there can name a class in a Python file next to it. Nothing here
imports Hydra: it lists YAML files and reads their `_target_`; icnn_bench.compose composes.
"""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from icnn_bench.errors import ConfigError

PACKAGE_CONF = Path(__file__).parent / "conf"
_added: list[Path] = []


NAMED_GROUPS = ("target", "model", "method")  # options that name themselves (`name:`)
CHECKED_GROUPS = (*NAMED_GROUPS, "log_z", "trainer", "logger", "regime", "experiment",
                  "hydra/launcher")  # fmt: skip


def add_search_dir(folder: str | Path) -> None:
    """Search `folder` for config options and import from it. A YAML there that cannot be
    used (malformed, not a mapping, an option without its `name`, or one with the name of
    a packaged option, which Hydra would silently prefer) raises ConfigError naming it."""
    folder = Path(folder).expanduser().resolve()
    if folder in _added or folder == PACKAGE_CONF.resolve():
        return
    check_folder(folder)
    _added.insert(0, folder)
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    _read.cache_clear()


def check_folder(folder: Path) -> None:
    """The problems of a user's config folder, as one ConfigError line (see add_search_dir)."""
    for group in CHECKED_GROUPS:
        for path in sorted((Path(folder) / group).glob("*.yaml")):
            where = f"{path.parent.name}/{path.name} in {folder}"
            if (PACKAGE_CONF / group / path.name).exists():
                raise ConfigError(
                    f"{where} has the name of a packaged {group} option ({path.stem}), which "
                    f"would be ambiguous; give yours another name (e.g. my_{path.stem})"
                )
            loaded = _load(path)
            if not isinstance(loaded, dict):
                kind = type(loaded).__name__ if loaded is not None else "empty"
                raise ConfigError(f"{where} is not a mapping of settings (its top level is "
                                  f"{'a ' + kind if kind != 'empty' else 'empty'})")  # fmt: skip
            if group in NAMED_GROUPS and "name" not in loaded and not loaded.get("defaults"):
                raise ConfigError(f"{where} has no `name:` (an option names itself: "
                                  f"name: {path.stem})")  # fmt: skip


def _load(path: Path) -> Any:
    """A YAML file's content; ConfigError naming the file and line where it is malformed."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ConfigError(f"{path}{line}: malformed YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: unreadable ({type(error).__name__})") from None


def search_dirs() -> list[Path]:
    return [*_added, PACKAGE_CONF]


def options(group: str) -> list[str]:
    """Option names of a config group (e.g. "method"), over every config folder, sorted."""
    names = set()
    for folder in search_dirs():
        names |= {p.stem for p in (folder / group).glob("*.yaml") if not p.stem.startswith("_")}
    return sorted(names)


def packaged(group: str, name: str) -> bool:
    """Whether the option comes with icnn-bench (else a user's folder added it)."""
    return (PACKAGE_CONF / group / f"{name}.yaml").exists()


def declared_target(group: str, name: str) -> str | None:
    """The `_target_` an option's YAML declares, its own or inherited through its defaults
    list from the same group (`defaults: [lift, _self_]`); ConfigError for no such option."""
    for folder in search_dirs():
        path = folder / group / f"{name}.yaml"
        if not path.exists():
            continue
        raw = _read(path)
        node = raw[group] if isinstance(raw.get(group), dict) else raw  # `@package _global_`
        if node.get("_target_") is not None:
            return str(node["_target_"])
        for entry in raw.get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_":
                inherited = declared_target(group, entry)
                if inherited is not None:
                    return inherited
        return None
    raise ConfigError(f"unknown {group} {name!r}; choose one of: {', '.join(options(group))}")


@cache
def _read(path: Path) -> dict[str, Any]:
    loaded = _load(path) or {}
    return loaded if isinstance(loaded, dict) else {}


def resolve(dotted: str, what: str) -> Any:
    """The object a `_target_` names, e.g. `icnn_bench.methods.pgd.ProjectedWeights`."""
    module_name, _, attr = str(dotted).rpartition(".")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(
            f"{what}._target_={dotted!r} cannot be imported ({type(error).__name__}: {error}); "
            "is its folder on the config search path (--config-dir) or on PYTHONPATH?"
        ) from None


def target_of(group: str, config: dict[str, Any]) -> str:
    """The `_target_` of a group's config: its own, else its option's (by `name`)."""
    dotted = config.get("_target_")
    if dotted is None:
        dotted = declared_target(group, str(config.get("name")))
    if dotted is None:
        raise ConfigError(f"{group} {config.get('name')!r} names nothing to build (no _target_)")
    return str(dotted)
