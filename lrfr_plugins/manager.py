"""Builds a fresh plugin manager: hookspecs, built-ins, and third-party plugins from entry points.

There is no module-level manager: every call builds a new one, so tests never see a developer's plugins.
Entry points of group ``lrfr`` are loaded one at a time; a failure is recorded and that plugin skipped
(pluggy's own ``load_setuptools_entrypoints`` would stop at the first one). The manager
(:class:`LrfrPluginManager`) keeps, beside pluggy's registrations, where each plugin came from and what failed to
load; :class:`~lrfr_plugins.registry.Registry` reads both from it.

Escape hatches:

- ``LRFR_LOAD_PLUGINS=a,b``: load only these third-party plugins (entry-point or distribution names);
  ``LRFR_LOAD_PLUGINS=""`` loads none. The built-ins of ``lrfr-plugins`` itself always load.
- ``LRFR_BLOCK_PLUGINS=a,b``: never load these (built-ins included, e.g. to replace one).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import os
from typing import Any

import pluggy

from . import hookspecs
from ._version import __version__
from .errors import did_you_mean

DISTRIBUTION = "lrfr-plugins"
BUILTIN_MODULE = "lrfr_plugins.builtin"


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _dist_of(ep: md.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)", "?"
    return dist.metadata["Name"], dist.version


@dataclasses.dataclass(frozen=True)
class Provider:
    """Where a plugin came from: a distribution (or a module when not installed) and its version."""

    distribution: str
    version: str
    module: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclasses.dataclass(frozen=True)
class LoadError:
    """A plugin that could not be loaded; reported by ``lrfr plugins``, never fatal."""

    source: str
    provider: str
    error: str
    #: The kind whose registration hook failed; None when unknown (an entry point that did not import may have
    #: carried plugins of any kind).
    kind: str | None = None

    def __str__(self) -> str:
        return f"{self.source} -> {self.error}"


class LrfrPluginManager(pluggy.PluginManager):
    """pluggy's manager with the project's hookspecs and provenance: the provider of every plugin registered
    through :meth:`register_plugin`, and the plugins that could not be loaded (``load_errors``)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self._providers: dict[int, Provider] = {}  # id(plugin object) -> Provider
        self.load_errors: list[LoadError] = []

    def register_plugin(self, plugin: Any, name: str, provider: Provider) -> None:
        """Register a plugin object (module or instance) with its provider; a misspelled hook is reported, not kept.

        Used for entry points and the built-ins, and by hand in tests or notebooks.
        """
        if self.is_registered(plugin):
            return
        try:
            self.register(plugin, name=name)
        except ValueError as exc:  # a second plugin under an already-used entry-point name
            self.load_errors.append(LoadError(f"plugin '{name}'", provider.distribution, str(exc)))
            return
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.unregister(plugin)
            self.load_errors.append(LoadError(f"plugin '{name}'", provider.distribution, "; ".join(unknown)))
            return
        self._providers[id(plugin)] = provider

    def provider_of(self, plugin: Any) -> Provider:
        """The provider ``plugin`` was registered with; pluggy's plain ``register`` leaves it "(registered by hand)"."""
        if id(plugin) in self._providers:
            return self._providers[id(plugin)]
        module = getattr(plugin, "__name__", type(plugin).__name__)
        return Provider("(registered by hand)", "?", module)

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        """Hook implementations whose name matches no hookspec (a typo would otherwise be silently ignored)."""
        problems = []
        for caller in self.get_hookcallers(plugin) or []:
            if caller.spec is None:
                hint = did_you_mean(caller.name, hookspecs.KIND_HOOKS.values())
                problems.append(f"unknown hook '{caller.name}'.{hint} Hooks: "
                                f"{', '.join(hookspecs.KIND_HOOKS.values())}")
        return problems


def get_plugin_manager(*, entry_points: bool = True) -> LrfrPluginManager:
    """A new manager with the hookspecs, the built-ins and (unless ``entry_points=False``) installed plugins."""
    pm = LrfrPluginManager()
    load_only = _env_names("LRFR_LOAD_PLUGINS")
    blocked = _env_names("LRFR_BLOCK_PLUGINS") or set()

    builtin_loaded = False
    eps = sorted(md.entry_points(group=hookspecs.PROJECT), key=lambda e: (e.value, e.name)) if entry_points else []
    seen_values: set[str] = set()
    for ep in eps:
        dist_name, dist_version = _dist_of(ep)
        is_builtin = ep.value == BUILTIN_MODULE
        if ep.value in seen_values:  # the same distribution found twice on sys.path
            continue
        if ep.name in blocked or dist_name in blocked:
            continue
        if not is_builtin and load_only is not None and ep.name not in load_only and dist_name not in load_only:
            continue
        seen_values.add(ep.value)
        try:
            plugin = ep.load()
        except Exception as exc:  # report and skip; never fatal
            pm.load_errors.append(LoadError(f"entry point '{ep.name} = {ep.value}'", dist_name,
                                            f"{type(exc).__name__}: {exc}"))
            continue
        pm.register_plugin(plugin, ep.name, Provider(dist_name, dist_version, ep.value))
        builtin_loaded = builtin_loaded or is_builtin
    if not builtin_loaded and "builtin" not in blocked and DISTRIBUTION not in blocked:
        # Running from a source tree that was never installed: same module, same hooks.
        pm.register_plugin(importlib.import_module(BUILTIN_MODULE), "builtin",
                           Provider(DISTRIBUTION, __version__, BUILTIN_MODULE))
    return pm
