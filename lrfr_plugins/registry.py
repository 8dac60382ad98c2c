"""The kind -> name table, built by calling every registration hook with a ``register`` callable.

The host, not the plugins, owns names, duplicates and provenance: each hook implementation is called on its
own, with a ``register`` that knows which distribution the implementation came from.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Iterable, Iterator

from .errors import DuplicatePluginError, LrfrError, UnknownKindError, UnknownPluginError, did_you_mean
from .hookspecs import KIND_HOOKS, KINDS
from .manager import LoadError, LrfrPluginManager, Provider
from .params import NoParams, build_params


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    kind: str
    name: str
    cls: type
    provider: Provider

    @property
    def params_cls(self) -> type:
        return getattr(self.cls, "Params", NoParams)

    @property
    def doc(self) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(self.cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def owner(self) -> str:
        """How messages name this plugin: "head 'arcface' (lrfr-plugins 0.1.0)"."""
        return f"{self.kind} '{self.name}' ({self.provider})"

    def build_params(self, values: dict[str, Any] | None) -> Any:
        return build_params(self.params_cls, values, owner=self.owner)

    @property
    def flags(self) -> dict[str, Any]:
        """The contract flags the host acts on, so a user sees why a head asks for a quality or a finetuner for labels.

        Read with getattr: a plugin written against an older API (or a host before an attribute existed) still lists.
        ``needs_labels`` is a method answered by an instance built from the default params; it is left out when
        the plugin cannot be built that way (e.g. a required path).
        """
        if self.kind == "head":
            return {"needs_quality": bool(getattr(self.cls, "needs_quality", False)),
                    "default_quality": getattr(self.cls, "default_quality", None),
                    "calibrated_quality": getattr(self.cls, "calibrated_quality", None),
                    "stochastic": bool(getattr(self.cls, "stochastic", False))}
        if self.kind == "quality":
            return {"uses_embeddings": bool(getattr(self.cls, "uses_embeddings", False)),
                    "cacheable": bool(getattr(self.cls, "cacheable", False))}
        if self.kind == "finetuner":
            try:
                return {"needs_labels": bool(self.cls(self.build_params({})).needs_labels())}
            except Exception:  # not constructible from defaults, or no needs_labels(): unknown, so not shown
                return {}
        return {}

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "provider": self.provider.distribution,
                "version": self.provider.version, "module": self.provider.module,
                "class": f"{self.cls.__module__}.{self.cls.__qualname__}", "doc": self.doc, "flags": self.flags}


class Registry:
    """Every registered plugin, by kind and name, with its provider, plus the plugins that failed to load."""

    def __init__(self, load_errors: list[LoadError] | None = None):
        self._table: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in KINDS}
        self.load_errors: list[LoadError] = list(load_errors or [])

    @classmethod
    def from_manager(cls, manager: LrfrPluginManager) -> "Registry":
        """Call each registration hook implementation with a provider-aware ``register``."""
        registry = cls(manager.load_errors)
        for kind, hook_name in KIND_HOOKS.items():
            for impl in getattr(manager.hook, hook_name).get_hookimpls():
                provider = manager.provider_of(impl.plugin)

                def register(name: str, plugin_cls: type, _kind=kind, _provider=provider) -> None:
                    registry.add(_kind, name, plugin_cls, _provider)

                try:
                    impl.function(register=register)
                except DuplicatePluginError:
                    raise
                except Exception as exc:  # a broken plugin is reported, not fatal
                    registry.load_errors.append(LoadError(f"{impl.plugin_name}.{hook_name}", provider.distribution,
                                                          f"{type(exc).__name__}: {exc}", kind))
        return registry

    def add(self, kind: str, name: str, plugin_cls: type, provider: Provider) -> None:
        self._check_kind(kind)
        if not isinstance(name, str) or not name:
            raise LrfrError(f"{provider}: a {kind} was registered with an invalid name {name!r}; use a non-empty string.")
        existing = self._table[kind].get(name)
        if existing is not None and existing.cls is not plugin_cls:
            raise DuplicatePluginError(
                f"{kind} '{name}' is registered twice: by {existing.provider} ({existing.provider.module}) and by "
                f"{provider} ({provider.module}). Uninstall one of them, or block one with "
                f"LRFR_BLOCK_PLUGINS=<entry point or distribution name>.")
        self._table[kind][name] = PluginInfo(kind, name, plugin_cls, provider)

    def _check_kind(self, kind: str) -> None:
        if kind not in self._table:
            raise UnknownKindError(f"unknown plugin kind '{kind}'.{did_you_mean(kind, KINDS)} "
                                   f"Kinds: {', '.join(KINDS)}")

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._table[kind])

    def get(self, kind: str, name: str) -> PluginInfo:
        self._check_kind(kind)
        try:
            return self._table[kind][name]
        except (KeyError, TypeError):
            raise UnknownPluginError(unknown_plugin_message(kind, name, self.names(kind),
                                                            self.load_errors_for(kind))) from None

    def load_errors_for(self, kind: str) -> list[LoadError]:
        """The load failures that may explain a missing ``kind``: its own failed hooks and every failed import."""
        return [err for err in self.load_errors if err.kind is None or err.kind == kind]

    def load_failure_note(self, kind: str) -> str:
        """'' or one sentence naming the packages that failed to load, for any message that lists what is installed."""
        return load_failure_note(self.load_errors_for(kind))

    def __iter__(self) -> Iterator[PluginInfo]:
        for kind in KINDS:
            for name in sorted(self._table[kind]):
                yield self._table[kind][name]

    def create(self, kind: str, name: str, /, **params: Any) -> Any:
        """Validate ``params`` and return a ready plugin instance."""
        info = self.get(kind, name)
        return info.cls(info.build_params(params))


def load_failure_note(load_errors: Iterable[LoadError]) -> str:
    """The packages that failed to load, each with its errors: a name missing because its package's import
    failed would otherwise read as a typo, while only 'lrfr plugins' showed the cause."""
    by_provider: dict[str, list[LoadError]] = {}
    for err in load_errors:
        by_provider.setdefault(err.provider, []).append(err)
    if not by_provider:
        return ""
    n = len(by_provider)
    packages = "; ".join(f"{provider} ({'; '.join(str(err) for err in errs)})"
                         for provider, errs in sorted(by_provider.items()))
    return (f"{n} plugin package{'s' if n > 1 else ''} failed to load: {packages}; "
            f"fix {'them' if n > 1 else 'it'} and see 'lrfr plugins'.")


def unknown_plugin_message(kind: str, name: Any, installed: list[str], load_errors: Iterable[LoadError] = ()) -> str:
    plural = "quality estimators" if kind == "quality" else f"{kind}s"
    lines = [f"unknown {kind} '{name}'."]
    hint = did_you_mean(str(name), installed).strip()
    if hint:
        lines.append(f"  {hint}")
    lines.append(f"  Installed {plural}: {', '.join(installed) if installed else '(none)'}")
    note = load_failure_note(load_errors)
    if note:
        lines.append(f"  {note}")
    lines.append("  Run 'lrfr plugins' to see which package provides each one.")
    return "\n".join(lines)
