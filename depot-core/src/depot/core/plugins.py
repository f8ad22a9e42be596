"""Finding and loading plugins: the ``depot`` entry-point group, one failure at a time.

pluggy's ``load_setuptools_entrypoints`` stops at the first plugin that fails to import; depot
loads each entry point on its own so that one broken plugin is reported and the rest still work.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType

import pluggy
from depot.core import hookspecs

ENTRY_POINT_GROUP = "depot"


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin and the distribution that installed it."""

    name: str
    module: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, with a one-line reason."""

    name: str
    value: str
    distribution: str
    error: str


@dataclass
class Plugins:
    """The plugin manager with what was loaded and what failed."""

    manager: pluggy.PluginManager
    loaded: list[PluginInfo] = field(default_factory=list)
    failed: list[PluginFailure] = field(default_factory=list)

    @property
    def hook(self) -> pluggy.HookRelay:
        return self.manager.hook


def load_plugins(
    load_entrypoints: bool = True, extra: tuple[ModuleType | object, ...] = ()
) -> Plugins:
    """A fresh plugin manager with the entry-point plugins (unless disabled) and ``extra`` ones.

    Tests pass ``load_entrypoints=False`` and an explicit list to get a depot with exactly the
    plugins they name.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    plugins = Plugins(manager)
    if load_entrypoints:
        seen: set[str] = set()
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=_order):
            if ep.name in seen or manager.is_blocked(ep.name):
                continue
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
                manager.register(module, name=ep.name)
            except Exception as exc:  # a plugin's import may fail in any way
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                plugins.failed.append(PluginFailure(ep.name, ep.value, dist, error))
                continue
            plugins.loaded.append(PluginInfo(ep.name, ep.value, dist, version))
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or repr(plugin)
        manager.register(plugin, name=name)
        plugins.loaded.append(PluginInfo(name, name, "(registered in code)", ""))
    manager.check_pending()
    return plugins


def _order(ep: importlib.metadata.EntryPoint) -> tuple[int, str]:
    # depot-core's built-in parts first, so ecosystems' routes and commands keep a stable order.
    dist = ep.dist.name if ep.dist else ""
    return (0 if dist.replace("_", "-") == "depot-core" else 1, ep.name)
