"""lrfr-plugins: low-resolution face recognition as plugins for InsightFace.

Public API::

    import lrfr_plugins
    head = lrfr_plugins.create("head", "arcface", margin=0.5)

Plugin authors import ``hookimpl`` and the base classes in ``lrfr_plugins.api``.

What is stable (covered by SemVer: names in each module's ``__all__`` keep their signatures and meaning within a
major version):

- ``lrfr_plugins``: ``create``, ``get_registry``, ``cache_clear``, ``hookimpl``, ``KINDS`` and the error classes;
- ``lrfr_plugins.api``: the base classes, ``param`` and ``NoParams``; ``lrfr_plugins.api.training``: the trainer's
  parts a finetuner is made of (batch loader, samplers, freezing, optimizer, loop skeleton, quality call);
- ``lrfr_plugins.ops``: ``resize_down_up``, ``to_network_input`` and ``margin_logits`` (the margin formula of the
  built-in heads), so a plugin degrades, feeds and margins images exactly as the host does;
- ``lrfr_plugins.metrics``: verification (10-fold accuracies, ROC, TAR@FAR, AUC, ``thin_curve``) and
  identification (CMC, rank-k) metrics for protocols;
- ``lrfr_plugins.synthetic``: ``SyntheticFaceGenerator`` and ``draw_pairs``, for synthetic datasets and protocols;
- ``lrfr_plugins.testing``: ``check_plugin`` and the per-kind conformance checks for a plugin's tests.

``get_registry()`` builds the registry of installed plugins once and caches it; ``cache_clear()`` drops that cache,
so the next call finds plugins installed (or environment variables such as ``LRFR_LOAD_PLUGINS`` changed) since.

Everything else (``builtin``, ``engine``, ``formats``, ``recipe``, ``runner``, submodules of the packages
above, ...) is internal and may change in any release: import from the modules listed here.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import (
    DataError,
    DuplicatePluginError,
    LrfrError,
    NonFiniteLossError,
    ParamsError,
    RecipeError,
    RunDirError,
    UnknownKindError,
    UnknownPluginError,
)
from .hookspecs import KINDS, hookimpl

_default_registry = None


def get_registry(*, refresh: bool = False):
    """The registry of installed plugins, built on first use (not at import) and cached (see :func:`cache_clear`)."""
    global _default_registry
    if _default_registry is None or refresh:
        from .manager import get_plugin_manager
        from .registry import Registry

        _default_registry = Registry.from_manager(get_plugin_manager())
    return _default_registry


def cache_clear() -> None:
    """Forget the cached registry: the next :func:`get_registry` or :func:`create` looks for plugins again."""
    global _default_registry
    _default_registry = None


def create(kind: str, name: str, /, **params: Any) -> Any:
    """Return a ready plugin instance of ``kind`` registered as ``name``, with validated ``params``.

    Unknown kinds, names or parameters raise an :class:`LrfrError` subclass listing the valid choices.
    """
    return get_registry().create(kind, name, **params)


__all__ = [
    "__version__", "cache_clear", "create", "get_registry", "hookimpl", "KINDS",
    "LrfrError", "UnknownKindError", "UnknownPluginError", "DuplicatePluginError", "ParamsError",
    "RecipeError", "RunDirError", "DataError", "NonFiniteLossError",
]
