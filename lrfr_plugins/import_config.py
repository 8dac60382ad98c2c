"""``lrfr import-config``: map an arcface_torch config file (``configs/*.py``) onto an lrfr recipe.

The config file is untrusted Python and is **never executed or imported**. It is parsed with :mod:`ast` and only
these statements are accepted:

* ``from easydict import EasyDict as edict`` and other imports (ignored: nothing is imported);
* ``config = edict()`` (or ``EasyDict()``), which starts an empty config as arcface_torch's files do;
* ``config.<field> = <value>`` (also ``config.a = config.b = <value>`` and ``config.<field> += <value>``);
* docstrings and ``pass``.

A value is a literal (number, string, True/False/None, tuple, list, dict; as :func:`ast.literal_eval` accepts,
without bytes/complex/sets), a ``config.<field>`` assigned earlier *in the same file* (arcface_torch's file builds a
fresh ``edict``, so base values are not visible there), a sign, or arithmetic (``+ - * / // % **``) on those, e.g.
WebFace42M's ``config.warmup_epoch = config.num_epoch // 10``. Sizes are capped. Anything else (a function call, a
name other than ``config``, attribute access on anything else, subscripts, comprehensions, lambdas, ...) is refused
with ``FILE:LINE`` and the construct.

The file's fields are merged over arcface_torch's ``configs/base.py`` defaults (:data:`BASE_DEFAULTS`), as
``utils/utils_config.get_config`` does (``cfg = configs.base.config; cfg.update(configs.x.config)``).

Mapping (arcface_torch field -> recipe):

* ``network``: r18/r34/r50/r100/r200 -> backbone ``iresnet18/34/50/100/200``, ``mbf`` -> ``mobilefacenet``;
  anything else (r2060, mbf_large, vit_*) is refused with the supported list. iresnet gets ``dropout: 0.0``
  (``get_model(..., dropout=0.0)`` in ``train_v2.py``).
* ``embedding_size`` -> ``backbone.params.embedding_size``.
* ``margin_list`` (m1, m2, m3), scale 64 (hard-coded in arcface_torch's ``CombinedMarginLoss(64, ...)``):
  (1, m, 0) -> head ``arcface {margin: m, fallback: none, gradient: detached}`` (arcface_torch since Dec 2022: no
  th/mm fallback, margin added under ``no_grad``); (1, 0, m) -> head ``cosface {margin: m}``; anything else ->
  head ``combined {m1, m2, m3}`` (the nominal formula) with a warning: arcface_torch itself trains CosFace(m3)
  when m3 > 0 (m2 silently ignored) and fails for m1 != 1.
* ``sample_rate`` -> ``train.sample_rate`` (Partial FC; 1.0 = full softmax).
* ``batch_size`` -> ``train.batch_size`` (per GPU/process in both).
* ``optimizer`` (sgd | adamw), ``lr``, ``weight_decay`` -> ``train.optimizer``; SGD momentum is always 0.9
  (arcface_torch hard-codes it and ignores ``config.momentum``; a different value is reported).
* ``num_epoch`` -> ``train.epochs``; schedule ``polynomial`` (arcface_torch's ``PolynomialLRWarmup``, power 1,
  stepped every iteration).
* ``warmup_epoch`` -> ``train.warmup_steps = num_image // (batch_size * world_size) * warmup_epoch`` (as
  ``train_v2.py`` computes it); the world size is unknown, so ``--world-size`` (default 8) supplies it. A negative
  warm-up (old configs: -1) becomes 0.
* ``rec`` -> ``data: {name: insightface-rec, params: {root: rec}}``.
* ``num_classes``/``num_image``: not needed (lrfr reads the pack's ``property`` and index); reported in a comment,
  with a warning when they are CASIA-WebFace's often-copied wrong counts 10575/494414 (the pack has 10572/490623).
* ``val_targets`` -> ``eval: [{name: bin, params: {path: <rec>/<target>.bin, preset: insightface}}]``.
* ``fp16`` -> ``train.amp: fp16`` (else ``none``).
* ``seed`` -> ``seed``; ``num_workers`` -> ``train.num_workers``; gradient clipping 5 -> ``train.grad_clip: 5.0``;
  horizontal flip 0.5 -> ``train.hflip: 0.5``.
* ``degradations: []`` (arcface_torch has none; ``dali_aug`` is reported, not mapped).
* Reported but not mapped: ``interclass_filtering_threshold`` > 0, ``gradient_acc`` > 1, ``dali``, ``resume``,
  ``output``, ``verbose``, ``frequent``, wandb fields and any unknown field.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import pathlib
from typing import Any

import yaml

from .errors import LrfrError

# arcface_torch's configs/base.py (deepinsight/insightface, recognition/arcface_torch/configs/base.py), the values
# every job config is merged over. The wandb fields are left out (not mapped). Fields base.py does not set (rec,
# num_classes, num_image, num_epoch, warmup_epoch, val_targets) must come from the job config.
BASE_DEFAULTS: dict[str, Any] = {
    "margin_list": (1.0, 0.5, 0.0),
    "network": "r50",
    "resume": False,
    "save_all_states": False,
    "output": "ms1mv3_arcface_r50",
    "embedding_size": 512,
    "sample_rate": 1,
    "interclass_filtering_threshold": 0,
    "fp16": False,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "verbose": 2000,
    "frequent": 10,
    "dali": False,
    "gradient_acc": 1,
    "seed": 2048,
    "num_workers": 2,
}

NETWORKS = {"r18": "iresnet18", "r34": "iresnet34", "r50": "iresnet50", "r100": "iresnet100",
            "r200": "iresnet200", "mbf": "mobilefacenet"}
ARCFACE_TORCH_SCALE = 64.0
ARCFACE_TORCH_MOMENTUM = 0.9
ARCFACE_TORCH_GRAD_CLIP = 5.0
DEFAULT_WORLD_SIZE = 8
#: CASIA-WebFace counts copied between repositories that do not match InsightFace's faces_webface_112x112 pack.
CASIA_WRONG = (10575, 494414)
CASIA_PACK = (10572, 490623)

MAPPED = {"margin_list", "network", "embedding_size", "sample_rate", "fp16", "batch_size", "optimizer", "lr",
          "momentum", "weight_decay", "seed", "num_workers", "rec", "num_classes", "num_image", "num_epoch",
          "warmup_epoch", "val_targets", "interclass_filtering_threshold", "gradient_acc", "dali", "dali_aug"}
IGNORED = {"resume", "save_all_states", "output", "verbose", "frequent", "wandb_key", "suffix_run_name",
           "using_wandb", "wandb_entity", "wandb_project", "wandb_log_all", "save_artifacts", "wandb_resume"}

MAX_FILE_BYTES = 1 << 20
MAX_INT = 10 ** 18
MAX_LEN = 10_000


class ImportConfigError(LrfrError):
    """An arcface_torch config that cannot be read or mapped."""


# ------------------------------------------------------------------------------------------------ parsing


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_OP_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
              ast.Pow: "**"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unparse(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except (ValueError, TypeError, AttributeError, RecursionError):  # pragma: no cover - odd nodes
        return "..."
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(node: ast.AST) -> str:
    """A short human name for a construct we refuse."""
    if isinstance(node, ast.Call):
        return f"a function call '{_unparse(node.func)}(...)'"
    if isinstance(node, ast.Name):
        return f"the name '{node.id}' (only config.<field> may be referenced)"
    if isinstance(node, ast.Attribute):
        return f"attribute access '{_unparse(node)}' (only config.<field> may be referenced)"
    names = {ast.Subscript: "a subscript", ast.Lambda: "a lambda", ast.ListComp: "a list comprehension",
             ast.DictComp: "a dict comprehension", ast.SetComp: "a set comprehension",
             ast.GeneratorExp: "a generator expression", ast.JoinedStr: "an f-string", ast.Set: "a set",
             ast.FunctionDef: "a function definition", ast.ClassDef: "a class definition", ast.If: "an if statement",
             ast.For: "a for loop", ast.While: "a while loop", ast.With: "a with statement", ast.Try: "a try statement",
             ast.Delete: "a del statement", ast.Global: "a global statement", ast.IfExp: "a conditional expression",
             ast.BoolOp: "a boolean operator", ast.Compare: "a comparison", ast.NamedExpr: "an assignment expression",
             ast.Starred: "a starred expression", ast.Await: "await", ast.AnnAssign: "an annotated assignment",
             ast.Expr: "an expression statement"}
    for cls, text in names.items():
        if isinstance(node, cls):
            return text
    return f"a {type(node).__name__} node"


class _ConfigReader:
    """Walks the module's AST; never evaluates anything but literals and arithmetic on them."""

    def __init__(self, path: str):
        self.path = path
        self.fields: dict[str, Any] = {}
        self.lines: dict[str, int] = {}

    def fail(self, node: ast.AST, message: str) -> ImportConfigError:
        line = getattr(node, "lineno", "?")
        return ImportConfigError(f"{self.path}:{line}: {message}. import-config reads only "
                                 f"'config.<field> = <literal>' lines (the file is never executed).")

    # -- statements
    def read(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            self.statement(stmt)

    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Pass)):
            return
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return  # a docstring or a bare string
        if isinstance(stmt, ast.Assign):
            if (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "config"):
                value = stmt.value
                if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                        and value.func.id in ("edict", "EasyDict") and not value.args and not value.keywords):
                    self.fields.clear()
                    self.lines.clear()
                    return
                raise self.fail(stmt, "unsupported construct: 'config' must be created with 'config = edict()'")
            for target in stmt.targets:
                self.field_name(target)
            value = self.value(stmt.value)
            for target in stmt.targets:
                name = self.field_name(target)
                self.fields[name] = copy.deepcopy(value)
                self.lines[name] = stmt.lineno
            return
        if isinstance(stmt, ast.AugAssign):
            name = self.field_name(stmt.target)
            if name not in self.fields:
                raise self.fail(stmt, f"config.{name} is updated before it is assigned in this file")
            op = type(stmt.op)
            if op not in _BINOPS:
                raise self.fail(stmt, f"unsupported operator {type(stmt.op).__name__}")
            self.fields[name] = self.arith(stmt, op, self.fields[name], self.value(stmt.value))
            self.lines[name] = stmt.lineno
            return
        if isinstance(stmt, ast.Expr):
            raise self.fail(stmt, f"unsupported construct: {_describe(stmt.value)} as a statement")
        raise self.fail(stmt, f"unsupported construct: {_describe(stmt)}")

    def field_name(self, target: ast.AST) -> str:
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "config":
            return target.attr
        raise self.fail(target, f"unsupported assignment target {_describe(target)}; only 'config.<field> = ...'")

    # -- expressions
    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, (bool, int, float, str)):
                if isinstance(node.value, str) and len(node.value) > MAX_LEN:
                    raise self.fail(node, "string too long")
                return node.value
            raise self.fail(node, f"unsupported constant {type(node.value).__name__}")
        if isinstance(node, (ast.Tuple, ast.List)):
            if len(node.elts) > MAX_LEN:
                raise self.fail(node, "list too long")
            items = [self.value(e) for e in node.elts]
            return tuple(items) if isinstance(node, ast.Tuple) else items
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.fail(node, "unsupported construct: '**' in a dict")
            out = {}
            for k, v in zip(node.keys, node.values):
                key = self.value(k)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise self.fail(k, "dict keys must be strings or numbers")
                out[key] = self.value(v)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if not _is_number(operand):
                raise self.fail(node, "a sign applies to numbers only")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _BINOPS:
                raise self.fail(node, f"unsupported operator {type(node.op).__name__}")
            return self.arith(node, op, self.value(node.left), self.value(node.right))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "config":
            if node.attr not in self.fields:
                raise self.fail(node, f"config.{node.attr} is used before it is assigned in this file "
                                      f"(arcface_torch would fail with AttributeError too)")
            return copy.deepcopy(self.fields[node.attr])
        raise self.fail(node, f"unsupported construct: {_describe(node)}")

    def arith(self, node: ast.AST, op: type, left: Any, right: Any) -> Any:
        symbol = _OP_SYMBOL[op]
        if _is_number(left) and _is_number(right):
            if op is ast.Pow and (abs(right) > 64 or abs(left) > MAX_INT):
                raise self.fail(node, "exponent too large")
            try:
                result = _BINOPS[op](left, right)
            except (ZeroDivisionError, OverflowError, ValueError) as exc:
                raise self.fail(node, f"arithmetic error in '{symbol}': {exc}") from None
            if isinstance(result, complex) or (isinstance(result, int) and abs(result) > MAX_INT) or (
                    isinstance(result, float) and not math.isfinite(result)):
                raise self.fail(node, f"the result of '{symbol}' is out of range")
            return result
        same_seq = (isinstance(left, str) and isinstance(right, str)) or (
            isinstance(left, (list, tuple)) and type(left) is type(right))
        if op is ast.Add and same_seq:
            if len(left) + len(right) > MAX_LEN:
                raise self.fail(node, "the result is too long")
            return left + right
        raise self.fail(node, f"unsupported operands for '{symbol}': {type(left).__name__} and {type(right).__name__} "
                              f"(arithmetic on numbers, '+' on strings or lists)")


def parse_config(text: str, path: str = "<config>") -> tuple[dict[str, Any], dict[str, int]]:
    """The fields one arcface_torch config file assigns, and the line of each (not merged with base.py)."""
    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise ImportConfigError(f"{path}: file too large for an arcface_torch config ({len(text)} characters).")
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as exc:
        raise ImportConfigError(f"{path}:{exc.lineno or '?'}: not valid Python: {exc.msg}.") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ImportConfigError(f"{path}: cannot parse the file: {type(exc).__name__}.") from None
    reader = _ConfigReader(path)
    try:
        reader.read(tree)
    except RecursionError:
        raise ImportConfigError(f"{path}: expressions nested too deeply.") from None
    return reader.fields, reader.lines


def read_config(path: str | pathlib.Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """(merged config = base.py defaults updated with the file, the file's own fields, their lines)."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImportConfigError(f"{path}: file not found.") from None
    except OSError as exc:
        raise ImportConfigError(f"{path}: cannot read the file: {exc.strerror}.") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ImportConfigError(f"{path}: file too large for an arcface_torch config ({len(raw)} bytes).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportConfigError(f"{path}: not UTF-8 text.") from None
    own, lines = parse_config(text, str(path))
    merged = {**BASE_DEFAULTS, **own}
    return merged, own, lines


# ------------------------------------------------------------------------------------------------ mapping


def _where(lines: dict[str, int], path: str, field: str) -> str:
    return f"{path}:{lines[field]}" if field in lines else f"{path} (configs/base.py default)"


def _number(cfg: dict, field: str, where: str, *, integer: bool = False) -> Any:
    value = cfg.get(field)
    ok = isinstance(value, int) if integer else _is_number(value)
    if not ok or isinstance(value, bool):
        kind = "an integer" if integer else "a number"
        raise ImportConfigError(f"{where}: config.{field} must be {kind}, got {value!r}.")
    return value


def _float(value: Any) -> float:
    return float(value)


def build_recipe(cfg: dict[str, Any], own: dict[str, Any], lines: dict[str, int], path: str, *,
                 world_size: int = DEFAULT_WORLD_SIZE) -> tuple[dict[str, Any], list[str], list[str]]:
    """Map a merged arcface_torch config to (recipe dict, comment lines, warnings)."""
    notes: list[str] = []
    warnings: list[str] = []
    name = pathlib.Path(path).stem or "imported"

    # -- backbone
    network = cfg.get("network")
    if network not in NETWORKS:
        supported = ", ".join(f"{k} -> {v}" for k, v in NETWORKS.items())
        raise ImportConfigError(f"{_where(lines, path, 'network')}: config.network {network!r} has no lrfr backbone. "
                                f"Supported: {supported}.")
    embedding = _number(cfg, "embedding_size", _where(lines, path, "embedding_size"), integer=True)
    backbone_params: dict[str, Any] = {"embedding_size": embedding}
    if network.startswith("r"):
        backbone_params["dropout"] = 0.0
    backbone = {"name": NETWORKS[network], "params": backbone_params}
    notes.append(f"backbone: network {network} -> {NETWORKS[network]}, embedding_size {embedding}"
                 + (" (dropout 0.0 as train_v2.py's get_model)" if network.startswith("r") else ""))

    # -- head
    where = _where(lines, path, "margin_list")
    margins = cfg.get("margin_list")
    if not isinstance(margins, (list, tuple)) or len(margins) != 3 or not all(_is_number(m) for m in margins):
        raise ImportConfigError(f"{where}: config.margin_list must be three numbers (m1, m2, m3), got {margins!r}.")
    m1, m2, m3 = (float(m) for m in margins)
    scale = ARCFACE_TORCH_SCALE
    if m1 == 1.0 and m3 == 0.0:
        head = {"name": "arcface", "params": {"scale": scale, "margin": m2, "fallback": "none",
                                              "gradient": "detached"}}
        notes.append(f"head: margin_list ({m1:g}, {m2:g}, {m3:g}) -> arcface, margin {m2:g}, scale 64 (hard-coded "
                     f"in arcface_torch); fallback none + gradient detached = arcface_torch's no_grad margin")
    elif m1 == 1.0 and m2 == 0.0:
        head = {"name": "cosface", "params": {"scale": scale, "margin": m3}}
        notes.append(f"head: margin_list ({m1:g}, {m2:g}, {m3:g}) -> cosface, margin {m3:g}, scale 64 "
                     f"(hard-coded in arcface_torch)")
    else:
        head = {"name": "combined", "params": {"scale": scale, "m1": m1, "m2": m2, "m3": m3}}
        if m3 > 0:
            actual = (f"arcface_torch's CombinedMarginLoss actually trains CosFace with margin {m3:g} here (m2 and m1 "
                      f"are silently ignored when m3 > 0); for that, use head cosface margin {m3:g}")
        else:
            actual = "arcface_torch's CombinedMarginLoss cannot train this (m1 != 1 and m3 == 0 hits a bare 'raise')"
        notes.append(f"head: margin_list ({m1:g}, {m2:g}, {m3:g}) -> combined (nominal cos(m1*t + m2) - m3), "
                     f"scale 64. WARNING: {actual}")
        warnings.append(f"{where}: margin_list ({m1:g}, {m2:g}, {m3:g}) -> head 'combined'; {actual}.")

    # -- data
    where = _where(lines, path, "rec")
    rec = cfg.get("rec")
    if not isinstance(rec, str) or not rec:
        raise ImportConfigError(f"{where}: config.rec (the folder of train.rec/train.idx) is required and must be a "
                                f"string, got {rec!r}. configs/base.py does not set it.")
    data = {"name": "insightface-rec", "params": {"root": rec}}
    notes.append(f"data: rec {rec} -> insightface-rec root (train.rec, train.idx and property are read from it)")

    counts = [f"{f} {cfg[f]}" for f in ("num_classes", "num_image") if f in cfg]
    if counts:
        notes.append(f"{', '.join(counts)}: not needed (lrfr reads the pack's property and index)")
    if (cfg.get("num_classes"), cfg.get("num_image")) == CASIA_WRONG or cfg.get("num_classes") == CASIA_WRONG[0] \
            or cfg.get("num_image") == CASIA_WRONG[1]:
        text = (f"num_classes/num_image look like the often-copied CASIA-WebFace counts {CASIA_WRONG[0]}/"
                f"{CASIA_WRONG[1]}; InsightFace's faces_webface_112x112 pack has {CASIA_PACK[0]}/{CASIA_PACK[1]}")
        notes.append(f"WARNING: {text} (warm-up steps below use the config's num_image)")
        warnings.append(f"{_where(lines, path, 'num_image' if 'num_image' in lines else 'num_classes')}: {text}.")

    # -- train
    batch = _number(cfg, "batch_size", _where(lines, path, "batch_size"), integer=True)
    epochs = cfg.get("num_epoch")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ImportConfigError(f"{_where(lines, path, 'num_epoch')}: config.num_epoch must be a non-negative "
                                f"integer, got {epochs!r}. configs/base.py does not set it.")
    opt_name = cfg.get("optimizer")
    if opt_name not in ("sgd", "adamw"):
        raise ImportConfigError(f"{_where(lines, path, 'optimizer')}: config.optimizer {opt_name!r}: arcface_torch "
                                f"and lrfr support 'sgd' and 'adamw'.")
    lr = _float(_number(cfg, "lr", _where(lines, path, "lr")))
    wd = _float(_number(cfg, "weight_decay", _where(lines, path, "weight_decay")))
    optimizer: dict[str, Any] = {"name": opt_name, "lr": lr}
    if opt_name == "sgd":
        optimizer["momentum"] = ARCFACE_TORCH_MOMENTUM
        momentum = cfg.get("momentum")
        if momentum != ARCFACE_TORCH_MOMENTUM:
            notes.append(f"momentum: config.momentum {momentum!r} is ignored by arcface_torch (SGD momentum is "
                         f"hard-coded 0.9); 0.9 used")
            warnings.append(f"{_where(lines, path, 'momentum')}: config.momentum {momentum!r} is ignored by "
                            f"arcface_torch (hard-coded 0.9); the recipe uses 0.9.")
        else:
            notes.append("optimizer: sgd, momentum 0.9 (hard-coded in arcface_torch; config.momentum is ignored)")
    else:
        notes.append("optimizer: adamw (arcface_torch's AdamW over backbone + Partial FC); momentum not used")
    optimizer["weight_decay"] = wd

    warmup_epoch = cfg.get("warmup_epoch", 0)
    if "warmup_epoch" not in cfg:
        notes.append("warmup_epoch: not set (configs/base.py has none); 0 used")
    if not _is_number(warmup_epoch):
        raise ImportConfigError(f"{_where(lines, path, 'warmup_epoch')}: config.warmup_epoch must be a number, got "
                                f"{warmup_epoch!r}.")
    if warmup_epoch < 0:
        notes.append(f"warmup_epoch {warmup_epoch} (old arcface_torch: no warm-up) -> 0")
        warmup_epoch = 0
    warmup_steps = 0
    if warmup_epoch > 0:
        num_image = cfg.get("num_image")
        if not isinstance(num_image, int) or isinstance(num_image, bool) or num_image <= 0:
            raise ImportConfigError(f"{_where(lines, path, 'num_image')}: config.num_image (a positive integer) is "
                                    f"needed to turn warmup_epoch {warmup_epoch} into steps, got {num_image!r}.")
        warmup_steps = int(num_image // (batch * world_size) * warmup_epoch)
    notes.append(f"warmup_steps {warmup_steps} = num_image // (batch_size {batch} * world_size {world_size}) * "
                 f"warmup_epoch {warmup_epoch:g}, as train_v2.py; world_size is assumed (--world-size, default "
                 f"{DEFAULT_WORLD_SIZE}): it matches only when lrfr runs on that many processes")
    notes.append(f"batch_size {batch} is per GPU/process in arcface_torch and lrfr (total {batch} x world size)")
    notes.append(f"schedule: polynomial (arcface_torch's PolynomialLRWarmup, power 1, per step) over num_epoch "
                 f"{epochs}")

    sample_rate = _float(_number(cfg, "sample_rate", _where(lines, path, "sample_rate")))
    notes.append(f"sample_rate {sample_rate:g} -> train.sample_rate (Partial FC; 1 = the full softmax)")

    fp16 = cfg.get("fp16")
    amp = "fp16" if fp16 else "none"
    notes.append(f"fp16 {fp16} -> train.amp {amp}")

    seed = _number(cfg, "seed", _where(lines, path, "seed"), integer=True)
    workers = _number(cfg, "num_workers", _where(lines, path, "num_workers"), integer=True)

    train = {
        "epochs": epochs,
        "batch_size": batch,
        "optimizer": optimizer,
        "schedule": "polynomial",
        "warmup_steps": warmup_steps,
        "sample_rate": sample_rate,
        "amp": amp,
        "hflip": 0.5,
        "grad_clip": ARCFACE_TORCH_GRAD_CLIP,
        "num_workers": workers,
    }

    # -- eval
    targets = cfg.get("val_targets", [])
    if "val_targets" not in cfg:
        notes.append("val_targets: not set (configs/base.py has none); no eval entries")
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) and t for t in targets):
        raise ImportConfigError(f"{_where(lines, path, 'val_targets')}: config.val_targets must be a list of names "
                                f"like ['lfw', 'cfp_fp'], got {targets!r}.")
    root = rec.rstrip("/") or "/"
    evals = [{"name": "bin", "params": {"path": f"{root}/{t}.bin" if root != "/" else f"/{t}.bin",
                                        "preset": "insightface"}} for t in targets]
    if evals:
        notes.append(f"eval: val_targets {list(targets)} -> bin protocol on <rec>/<target>.bin, preset insightface")

    # -- reported, not mapped
    threshold = cfg.get("interclass_filtering_threshold", 0)
    if _is_number(threshold) and threshold > 0:
        text = f"interclass_filtering_threshold {threshold} has no lrfr equivalent; not mapped"
        notes.append(f"WARNING: {text}")
        warnings.append(f"{_where(lines, path, 'interclass_filtering_threshold')}: {text}.")
    acc = cfg.get("gradient_acc", 1)
    if acc != 1:
        text = (f"gradient_acc {acc} (arcface_torch steps the optimizer every {acc} batches) is not mapped; "
                f"the effective batch differs")
        notes.append(f"WARNING: {text}")
        warnings.append(f"{_where(lines, path, 'gradient_acc')}: {text}.")
    if cfg.get("dali_aug"):
        notes.append("dali_aug True: arcface_torch's DALI augmentation (resize to 56-89 px p=0.1, blur, HSV, grey) is "
                     "not mapped; degradations is empty")
    if cfg.get("dali"):
        notes.append("dali True: DALI data loading is not mapped (lrfr reads the .rec directly)")
    if "loss" in own:
        notes.append(f"loss {own['loss']!r} (old arcface_torch field) is ignored, as current arcface_torch does; "
                     f"the head comes from margin_list")
    if "decay_epoch" in own:
        notes.append(f"decay_epoch {own['decay_epoch']!r} (old arcface_torch step schedule) is ignored; current "
                     f"arcface_torch uses the polynomial schedule")
    ignored = sorted(k for k in own if k in IGNORED)
    if ignored:
        notes.append(f"not mapped: {', '.join(ignored)}")
    unknown = sorted(k for k in own if k not in MAPPED and k not in IGNORED and k not in ("loss", "decay_epoch"))
    if unknown:
        notes.append(f"unknown fields, not mapped: {', '.join(unknown)}")
        warnings.append(f"{path}: unknown fields not mapped: {', '.join(unknown)}.")

    recipe = {
        "lrfr": 1,
        "name": name,
        "seed": seed,
        "data": data,
        "backbone": backbone,
        "head": head,
        "degradations": [],
        "train": train,
        "eval": evals,
    }
    return recipe, notes, warnings


# ------------------------------------------------------------------------------------------------ output


def _diff(base: Any, ours: Any) -> Any:
    """The part of ``ours`` that differs from ``base`` under recipe merge rules (mappings merge, lists replace,
    a slot whose plugin name changes is replaced whole). Returns ``_SAME`` when nothing differs."""
    if isinstance(base, dict) and isinstance(ours, dict):
        if "name" in base and "name" in ours and base["name"] != ours["name"]:
            return ours
        out = {}
        for key, value in ours.items():
            if key not in base:
                out[key] = value
                continue
            sub = _diff(base[key], value)
            if sub is not _SAME:
                out[key] = sub
        return out if out else _SAME
    return _SAME if base == ours else ours


_SAME = object()


def _inherited(base: Any, ours: Any, prefix: str = "") -> list[str]:
    """Dotted paths set by the base recipe that the imported config does not set (they are inherited)."""
    if not isinstance(base, dict):
        return []
    if isinstance(ours, dict) and "name" in base and "name" in ours and base["name"] != ours["name"]:
        return []
    out = []
    for key, value in base.items():
        sub = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(ours, dict) or key not in ours:
            out.append(sub)
        else:
            out.extend(_inherited(value, ours[key], sub))
    return out


def against_base(recipe: dict[str, Any], base: str) -> tuple[dict[str, Any], list[str]]:
    """(``extends: base`` + only the keys that differ from the base recipe, comment lines)."""
    from .recipe import load_recipe_data

    base_data, _ = load_recipe_data(base)
    full = copy.deepcopy(recipe)
    # Sections arcface_torch has none of are switched off explicitly, so the base's do not leak in.
    if base_data.get("quality") is not None:
        full["quality"] = None
    if base_data.get("finetune"):
        full["finetune"] = []
    out: dict[str, Any] = {"lrfr": full.pop("lrfr"), "name": full.pop("name"), "extends": base}
    for key, value in full.items():
        if key not in base_data:
            out[key] = value
            continue
        sub = _diff(base_data[key], value)
        if sub is not _SAME:
            out[key] = sub
    notes = [(f"extends {base}: only keys that differ from it are written (the path is relative to the folder of "
              f"the file this output is saved in)")]
    inherited = [p for p in _inherited(base_data, full) if p not in ("lrfr", "name", "extends")]
    if inherited:
        notes.append(f"inherited from the base, not set by the arcface_torch config: {', '.join(inherited)}")
    return out, notes


def render(recipe: dict[str, Any], notes: list[str], source: str) -> str:
    """YAML text: a comment header naming the source and every assumption, then the recipe."""
    import textwrap

    header = [f"Imported by 'lrfr import-config' from the arcface_torch config {source}",
              "(merged over arcface_torch's configs/base.py defaults, as utils_config.get_config does).",
              "Assumptions and notes:"]
    lines = [f"# {h}" for h in header]
    for note in notes:
        wrapped = textwrap.wrap(note, width=112, initial_indent="#  - ", subsequent_indent="#    ",
                                break_on_hyphens=False, break_long_words=False)
        lines.extend(wrapped)
    lines.append("# train.sample_rate, train.amp and schedule 'polynomial' need an lrfr with those settings.")
    text = "\n".join(lines) + "\n"
    for key, value in recipe.items():
        # Block style at the top level (a flow '{key: value}' per line would not be one YAML document).
        nested = isinstance(value, (dict, list)) and value
        text += yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=None if nested else False,
                               width=100)
    return text


def import_config(config: str | pathlib.Path, *, base: str | None = None,
                  world_size: int = DEFAULT_WORLD_SIZE) -> tuple[str, list[str]]:
    """Read an arcface_torch config (never executing it) and return (recipe YAML text, warnings)."""
    if not isinstance(world_size, int) or world_size < 1:
        raise ImportConfigError(f"--world-size must be a positive integer, got {world_size!r}.")
    cfg, own, lines = read_config(config)
    recipe, notes, warnings = build_recipe(cfg, own, lines, str(config), world_size=world_size)
    if base is not None:
        recipe, base_notes = against_base(recipe, base)
        notes = base_notes + notes
    return render(recipe, notes, str(config)), warnings
