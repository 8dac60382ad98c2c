"""Recipes: YAML (safe_load only) with ``extends:``, ``--set`` overrides, validation and the resolved form.

Validation reads no data and builds no model: it checks every slot's plugin name and parameters and every host
setting, collects all problems, and reports them at once with the file and dotted path each came from. What runs
but probably not as meant (a quality the head ignores, a head calibrated for another quality) is a
:class:`RecipeWarning`, issued by ``validate`` and kept in ``Recipe.warnings`` (the runner writes them to run.log).
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import warnings as pywarnings
from typing import Any

import yaml

from .errors import LrfrWarning, ParamsError, RecipeError, UnknownPluginError, did_you_mean
from .engine.config import ExportConfig, OptimizerConfig, TrainConfig
from .params import build_params, format_problems, params_to_dict
from .registry import Registry
from .safe_yaml import load_yaml

SCHEMA_VERSION = 1
#: Top-level sections: slot sections name one plugin, list sections several.
SLOTS = {"data": "dataset", "backbone": "backbone", "head": "head", "quality": "quality"}
LISTS = {"degradations": "degradation", "finetune": "finetuner", "eval": "protocol"}
#: What an empty list of each list section means, for the message that tells how to write "none".
LIST_NONE = {"degradations": "degradations", "finetune": "fine-tuning", "eval": "benchmarks"}
HOST = ("lrfr", "name", "extends", "seed", "train", "export")
TOP_LEVEL = HOST + tuple(SLOTS) + tuple(LISTS)
REQUIRED_SLOTS = ("data", "backbone", "head")


class RecipeWarning(LrfrWarning):
    """A valid recipe that probably does not do what it says: ``lrfr validate`` and ``lrfr run`` show it."""


@dataclasses.dataclass
class Recipe:
    """A validated recipe: ``data`` is the resolved mapping (every default filled, provider recorded)."""

    data: dict[str, Any]
    path: pathlib.Path | None
    train: TrainConfig
    optimizer: OptimizerConfig
    export: ExportConfig
    #: the RecipeWarning texts validation found (already issued once)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return self.data["name"]

    def slot(self, section: str) -> dict[str, Any] | None:
        return self.data.get(section)

    def dump(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False, default_flow_style=None, width=100)


# ---------------------------------------------------------------------------------------------- loading


class _Origins:
    """Which file (or --set) set each dotted path, so a problem names the right place."""

    def __init__(self) -> None:
        self.by_path: dict[str, str] = {}

    def record(self, tree: Any, source: str, prefix: str = "") -> None:
        if prefix:
            self.by_path[prefix] = source
        if isinstance(tree, dict):
            for key, value in tree.items():
                self.record(value, source, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(tree, list):
            for i, value in enumerate(tree):
                self.record(value, source, f"{prefix}.{i}")

    def forget_below(self, prefix: str) -> None:
        for key in [k for k in self.by_path if k.startswith(prefix + ".")]:
            del self.by_path[key]

    def of(self, path: str) -> str:
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            source = self.by_path.get(".".join(parts[:n]))
            if source:
                return source
        return self.by_path.get("", "<recipe>")

    def all_of(self, path: str) -> str:
        """Every source of ``path`` and the values below it, ``--set`` first: for a problem that several values
        cause together (a cross-field check), so none of them goes unnamed."""
        found = [self.of(path)] + [s for k, s in self.by_path.items() if k.startswith(path + ".")]
        unique = sorted(dict.fromkeys(found), key=lambda s: not s.startswith("--set "))
        return unique[0] + (" with " + ", ".join(unique[1:]) if len(unique) > 1 else "")


def _read_yaml(path: pathlib.Path, shown: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{shown}: file not found. Check the path (recipes ship in the 'recipes/' folder).") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{shown}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}). Save the "
                          "recipe as UTF-8.") from None
    except OSError as exc:
        raise RecipeError(f"{shown}: cannot read the recipe: {exc.strerror}.") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{shown}{where}: invalid YAML: {problem}. Fix the syntax at that line.") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}: a recipe must be a YAML mapping (key: value lines), got {type(data).__name__}.")
    return data


def _display(path: pathlib.Path) -> str:
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def _merge(base: Any, over: Any, origins: _Origins, prefix: str) -> Any:
    """Mappings deep-merge, lists replace, and a slot whose plugin name changes is replaced whole."""
    if isinstance(base, dict) and isinstance(over, dict):
        if prefix and "name" in base and "name" in over and base["name"] != over["name"]:
            origins.forget_below(prefix)
            return copy.deepcopy(over)
        out = dict(base)
        for key, value in over.items():
            sub = f"{prefix}.{key}" if prefix else str(key)
            out[key] = _merge(base[key], value, origins, sub) if key in base else copy.deepcopy(value)
        return out
    if prefix:
        origins.forget_below(prefix)
    return copy.deepcopy(over)


def _load_with_extends(path: pathlib.Path, origins: _Origins, chain: tuple[pathlib.Path, ...]) -> dict[str, Any]:
    shown = _display(path)
    data = _read_yaml(path, shown)
    parent = data.pop("extends", None)
    merged: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise RecipeError(f"{shown}: extends: must be a path to a base recipe (a string), got {parent!r}.")
        base_path = (path.parent / parent).resolve()
        if base_path in chain:
            cycle = " -> ".join(_display(p) for p in chain + (base_path,))
            raise RecipeError(f"{shown}: extends: recipes extend each other in a cycle ({cycle}). Remove one 'extends'.")
        if not base_path.is_file():
            raise RecipeError(f"{shown}: extends: base recipe '{parent}' not found (looked for {base_path}). "
                              f"The path is relative to the folder of {shown}.")
        merged = _load_with_extends(base_path, origins, chain + (base_path,))
    merged = _merge(merged, data, origins, "")
    origins.record(data, shown)
    return merged


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """'train.epochs=2' -> (['train', 'epochs'], 2); values are YAML (:func:`~lrfr_plugins.safe_yaml.load_yaml`)."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected DOTTED.PATH=VALUE, e.g. --set train.epochs=2")
    key, _, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise RecipeError(f"--set {assignment!r}: the path before '=' must be dotted keys, e.g. head.params.margin")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {assignment!r}: the value is not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    return parts, value


def _apply_set(tree: dict[str, Any], parts: list[str], value: Any, assignment: str) -> tuple[str, list[str]]:
    """Set the value; return its dotted path as validation spells it (list index -1 -> 2) and the paths of the
    mappings this --set created on the way, so problems there are blamed on the --set, not on the file."""
    node: Any = tree
    canonical: list[str] = []
    created: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise RecipeError(f"--set {assignment!r}: {where}: list index out of range "
                                  f"(the list has {len(node)} items; use 0..{len(node) - 1}).")
            index = int(part) % len(node)
            canonical.append(str(index))
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            canonical.append(part)
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                    created.append(".".join(canonical))
                node = node[part]
        else:
            raise RecipeError(f"--set {assignment!r}: {'.'.join(parts[:i])} is a value, not a mapping or list.")
    return ".".join(canonical), created


def load_recipe_data(path: str | pathlib.Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, _Origins]:
    """Read a recipe file with its ``extends`` chain and apply ``--set`` overrides (not yet validated)."""
    path = pathlib.Path(path)
    origins = _Origins()
    data = _load_with_extends(path.resolve(), origins, (path.resolve(),))
    origins.by_path[""] = _display(path.resolve())
    for assignment in overrides:
        parts, value = parse_set(assignment)
        source = f"--set {assignment.strip()}"  # each --set by itself: 'train.epochs=-1' is what the user typed
        where, created = _apply_set(data, parts, value, assignment)
        for prefix in created:
            origins.by_path[prefix] = source
        origins.forget_below(where)
        origins.record(value, source, where)
    data.setdefault("name", path.stem)
    return data, origins


# ------------------------------------------------------------------------------------------- validation


def _problem_block(origin: str, path: str, message: str) -> str:
    return f"{origin}: {path}: {message}"


def _params_blocks(exc: ParamsError, path: str, owner: str, origins: _Origins, problems: list[str],
                   renamed_by: str | None = None) -> None:
    """One block per source of the problems: two bad values of one section from two places are each blamed on their
    own place. A cross-field problem names every source below ``path``; a parameter that is unknown only because a
    --set renamed the plugin (``renamed_by``) names that --set too."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, problem in exc.problems or [("(params)", str(exc))]:
        if name == "(params)":
            origin = origins.all_of(path)
        else:
            origin = origins.of(f"{path}.{name}")
            if renamed_by and renamed_by != origin and problem.startswith("unknown parameter"):
                origin = f"{origin} with {renamed_by}"
        groups.setdefault(origin, []).append((name, problem))
    for origin, group in groups.items():
        problems.append(_problem_block(origin, path, format_problems(group, owner)))


def _resolve_slot(registry: Registry, kind: str, path: str, value: Any, origins: _Origins,
                  problems: list[str]) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.append(_problem_block(origins.of(path), path,
                                       f"must be a mapping like {{name: ..., params: {{...}}}}, got {value!r}."))
        return None
    extra = [k for k in value if k not in ("name", "params", "provider")]
    for key in extra:
        problems.append(_problem_block(origins.of(f"{path}.{key}"), f"{path}.{key}",
                                       f"unknown key.{did_you_mean(key, ['name', 'params'])} "
                                       f"A plugin slot has only 'name' and 'params'."))
    name = value.get("name")
    if name is None:
        problems.append(_problem_block(origins.of(path), f"{path}.name",
                                       f"required: which {kind} to use. Choose one of: {', '.join(registry.names(kind))}"))
        return None
    try:
        info = registry.get(kind, name)
    except UnknownPluginError as exc:
        problems.append(_problem_block(origins.of(f"{path}.name"), f"{path}.name", str(exc)))
        return None
    params = value.get("params") or {}
    if not isinstance(params, dict):
        problems.append(_problem_block(origins.of(f"{path}.params"), f"{path}.params",
                                       f"must be a mapping of parameter: value, got {params!r}."))
        return None
    try:
        built = info.build_params(params)
    except ParamsError as exc:
        named_by = origins.of(f"{path}.name")
        _params_blocks(exc, f"{path}.params", info.owner, origins, problems,
                       renamed_by=named_by if named_by.startswith("--set ") else None)
        return None
    return {"name": name, "params": params_to_dict(built),
            "provider": {"distribution": info.provider.distribution, "version": info.provider.version}}


def _resolve_host(cls: type, path: str, value: Any, origins: _Origins, problems: list[str]) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        problems.append(_problem_block(origins.of(path), path, f"must be a mapping, got {value!r}."))
        return None
    try:
        return build_params(cls, value, owner=f"'{path}'")
    except ParamsError as exc:
        _params_blocks(exc, path, f"'{path}'", origins, problems)
        return None


def _resolve_default_quality(registry: Registry, resolved: dict[str, Any], origins: _Origins,
                             problems: list[str]) -> None:
    """A head that needs a per-sample quality gets its default estimator, written into the resolved recipe."""
    head = resolved.get("head")
    if head is None or resolved.get("quality") is not None:
        return
    head_cls = registry.get("head", head["name"]).cls
    if not getattr(head_cls, "needs_quality", False):
        return
    default = getattr(head_cls, "default_quality", None)
    if default:
        resolved["quality"] = _resolve_slot(registry, "quality", "quality", {"name": default}, origins, problems)
    else:
        problems.append(_problem_block(origins.of("head"), "quality",
                                       f"head '{head['name']}' needs a per-sample quality: add 'quality: {{name: ...}}'. "
                                       f"Installed: {', '.join(registry.names('quality')) or '(none)'}"))


def _quality_warnings(registry: Registry, data: dict[str, Any], resolved: dict[str, Any],
                      origins: _Origins) -> list[str]:
    """A quality the head does not read (it is then never computed), or one in units the head's defaults are not
    set for (``Head.quality_mismatch``; the parameters the recipe itself set count as recalibration)."""
    head, quality = resolved.get("head"), resolved.get("quality")
    if head is None or quality is None:
        return []
    head_cls = registry.get("head", head["name"]).cls
    where = origins.of("quality")
    if not getattr(head_cls, "needs_quality", False):
        readers = [n for n in registry.names("head") if getattr(registry.get("head", n).cls, "needs_quality", False)]
        return [f"{where}: quality: head '{head['name']}' reads no per-sample quality, so quality "
                f"'{quality['name']}' is ignored (never computed, not given to finetuners). Remove the quality "
                f"section (--set quality=null), or use a head that reads it "
                f"({', '.join(readers) or 'none installed'})."]
    hook = getattr(head_cls, "quality_mismatch", None)
    if hook is None:
        return []
    info = registry.get("quality", quality["name"])
    units_for = getattr(info.cls, "units_for", None)
    units = (units_for(info.build_params(quality["params"])) if units_for else getattr(info.cls, "units", None)) \
        or quality["name"]
    shown = quality["name"] if units == quality["name"] else f"{quality['name']} (in {units} units)"
    raw = (data.get("head") or {}).get("params") or {}
    text = hook(head["name"], head["params"], frozenset(raw), shown, units)
    blamed = " with ".join(dict.fromkeys([origins.of("quality"), origins.of("head.name")]))
    return [f"{blamed}: quality: {text}"] if text else []


def _not_a_list(section: str, value: Any) -> str:
    """A list section that holds something else, with how to write 'none' and how to write entries."""
    got = f"a mapping ({_short(value)})" if isinstance(value, dict) else _short(value)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        fix = (f"It looks like one entry without its list dash: write '{section}: [{{name: {value['name']}, "
               "params: {...}}]' (or '- name: ...' on the next line)")
    else:
        fix = (f"Write '{section}: []' for no {LIST_NONE[section]}, or list them: "
               f"'{section}: [{{name: ..., params: {{...}}}}]'")
    return f"must be a list of {{name: ..., params: {{...}}}} entries, got {got}. {fix}."


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_folder_name(name: str) -> bool:
    """A single path component that stays inside its parent: no separators, not '.' or '..', no NUL."""
    return name not in (".", "..") and not any(c in name for c in "/\\\0") and name.strip() == name


def validate(data: dict[str, Any], origins: _Origins, registry: Registry, path: pathlib.Path | None = None) -> Recipe:
    """Check everything; raise one :class:`RecipeError` listing every problem, or return the resolved recipe."""
    problems: list[str] = []
    for key in data:
        if key not in TOP_LEVEL:
            problems.append(_problem_block(origins.of(str(key)), str(key),
                                           f"unknown top-level key.{did_you_mean(str(key), TOP_LEVEL)} "
                                           f"Allowed: {', '.join(TOP_LEVEL)}"))
    version = data.get("lrfr", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        problems.append(_problem_block(origins.of("lrfr"), "lrfr",
                                       f"unsupported recipe schema version {version!r}; this lrfr-plugins reads "
                                       f"version {SCHEMA_VERSION}. Set 'lrfr: {SCHEMA_VERSION}'."))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append(_problem_block(origins.of("name"), "name", f"must be a non-empty string, got {name!r}."))
    elif not _is_folder_name(name):
        problems.append(_problem_block(origins.of("name"), "name",
                                       f"{name!r} is not a single folder name; it becomes runs/<name>, so it must not "
                                       "hold '/', '\\' or be '.' or '..'. Use letters, digits, '-', '_' and '.', or "
                                       "write the run elsewhere with --out DIR."))
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(_problem_block(origins.of("seed"), "seed", f"must be an integer, got {seed!r}."))
    elif not 0 <= seed < 2**63:
        problems.append(_problem_block(origins.of("seed"), "seed",
                                       f"must be between 0 and 2**63 - 1 (torch's seed range), got {seed}."))

    resolved: dict[str, Any] = {"lrfr": SCHEMA_VERSION, "name": data.get("name"), "seed": seed}
    for section, kind in SLOTS.items():
        value = data.get(section)
        if value is None:
            if section in REQUIRED_SLOTS:
                problems.append(_problem_block(origins.of(section), section,
                                               f"required: the {kind} to use, as {{name: ..., params: {{...}}}}. "
                                               f"Installed: {', '.join(registry.names(kind))}"))
            resolved[section] = None
            continue
        resolved[section] = _resolve_slot(registry, kind, section, value, origins, problems)
    for section, kind in LISTS.items():
        value = data.get(section)
        if value is None:  # absent or 'eval:' alone; '', false, 0 or {} are mistakes, not "none"
            value = []
        elif not isinstance(value, list):
            problems.append(_problem_block(origins.of(section), section, _not_a_list(section, value)))
            value = []
        resolved[section] = [_resolve_slot(registry, kind, f"{section}.{i}", item, origins, problems)
                             for i, item in enumerate(value)]

    _resolve_default_quality(registry, resolved, origins, problems)

    train_raw = data.get("train") or {}
    train = _resolve_host(TrainConfig, "train", train_raw, origins, problems)
    optimizer = None
    if train is not None:
        optimizer = _resolve_host(OptimizerConfig, "train.optimizer", train.optimizer, origins, problems)
    export = _resolve_host(ExportConfig, "export", data.get("export"), origins, problems)

    if problems:
        n = len(problems)
        head = f"{n} problem{'s' if n > 1 else ''} in the recipe:\n" if n > 1 else ""
        raise RecipeError(head + "\n".join(problems))
    train_dict = params_to_dict(train)
    train_dict["optimizer"] = params_to_dict(optimizer)
    resolved["train"] = train_dict
    resolved["export"] = params_to_dict(export)
    notes = _quality_warnings(registry, data, resolved, origins)
    for text in notes:
        pywarnings.warn(text, RecipeWarning, stacklevel=2)
    return Recipe(data=resolved, path=path, train=train, optimizer=optimizer, export=export, warnings=notes)


def load_recipe(path: str | pathlib.Path, overrides: list[str] | tuple[str, ...] = (), *,
                registry: Registry | None = None) -> Recipe:
    """Load, override and validate a recipe file."""
    if registry is None:
        from . import get_registry

        registry = get_registry()
    data, origins = load_recipe_data(path, overrides)
    return validate(data, origins, registry, pathlib.Path(path))


