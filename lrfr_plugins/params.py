"""Plugin parameters: declared once as a frozen dataclass, validated all at once, with did-you-mean.

A plugin class carries ``Params``, a frozen dataclass whose fields are built with :func:`param` (type from the
annotation, default, one-line doc, simple bounds). The same declaration feeds ``create()``, recipe validation,
``lrfr show`` and the resolved recipe, so a parameter is never described in two places.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import types
import typing
from typing import Any, Literal, Mapping, Union, get_args, get_origin

from .errors import ParamsError, did_you_mean

MISSING = dataclasses.MISSING


def param(default: Any = MISSING, doc: str = "", *, ge=None, gt=None, le=None, lt=None) -> Any:
    """Declare one parameter: its default (omit for a required one), a one-line doc and optional bounds."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For plugins without parameters."""


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        inner = _type_name(args[0]) if args else "any"
        return f"list[{inner}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if tp is pathlib.Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise ValueError with a readable reason."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"must be one of {', '.join(repr(a) for a in args)}, got {value!r}"
                         + did_you_mean(value, [str(a) for a in args]))
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"must be {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"must be a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ValueError("must be a number, got NaN")
            return value
        raise ValueError(f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
    if tp is pathlib.Path:
        if isinstance(value, (str, pathlib.PurePath)):
            return pathlib.Path(value).expanduser()
        raise ValueError(f"must be a path (string), got {type(value).__name__} {value!r}")
    if isinstance(value, tp):
        return value
    raise ValueError(f"must be {_type_name(tp)}, got {value!r}")


def _check_bounds(value: Any, meta: Mapping[str, Any]) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for key, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                          ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ValueError(f"must be {word} {bound}, got {value}")


def build_params(params_cls: type, values: Mapping[str, Any] | None, *, owner: str) -> Any:
    """Validate ``values`` against ``params_cls`` and return an instance; every problem is reported at once.

    ``owner`` names what the parameters belong to (e.g. "head 'arcface' (lrfr-plugins 0.1.0)").
    """
    values = dict(values or {})
    hints = typing.get_type_hints(params_cls)
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    problems: list[tuple[str, str]] = []
    kwargs: dict[str, Any] = {}
    accepted = ", ".join(fields) or "(none)"
    for key in values:
        if key not in fields:
            hint = did_you_mean(key, fields).strip()
            hint = f"; {hint[0].lower()}{hint[1:]}" if hint else "."
            problems.append((str(key), f"unknown parameter{hint} Accepted: {accepted}"))
    for name, field in fields.items():
        if name not in values:
            if field.default is MISSING and field.default_factory is MISSING:
                problems.append((name, f"required parameter is missing ({field.metadata.get('doc', '')})".replace(" ()", "")))
            continue
        try:
            value = _coerce(values[name], hints[name])
            _check_bounds(value, field.metadata)
            kwargs[name] = value
        except ValueError as exc:
            problems.append((name, str(exc)))
    if not problems:
        try:
            return params_cls(**kwargs)
        except (ValueError, TypeError) as exc:  # cross-field checks in __post_init__
            problems.append(("(params)", str(exc)))
    raise ParamsError(format_problems(problems, owner), problems)


def format_problems(problems: list[tuple[str, str]], owner: str) -> str:
    n = len(problems)
    lines = [f"{n} problem{'s' if n != 1 else ''} for {owner}:"]
    lines += [f"  - {name}: {msg}" for name, msg in problems]
    return "\n".join(lines)


def params_to_dict(params: Any) -> dict[str, Any]:
    """JSON/YAML-friendly dict of a params instance (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, pathlib.PurePath):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(params, f.name)) for f in dataclasses.fields(params)}


def describe(params_cls: type) -> list[dict[str, Any]]:
    """Rows for ``lrfr show``: name, type, default (or 'required'), doc, bounds."""
    hints = typing.get_type_hints(params_cls)
    rows = []
    for f in dataclasses.fields(params_cls):
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        bounds = [f"{w} {f.metadata[k]}" for k, w in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if f.metadata.get(k) is not None]
        rows.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                     "doc": f.metadata.get("doc", ""), "bounds": ", ".join(bounds)})
    return rows
