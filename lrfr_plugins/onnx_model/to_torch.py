"""An ONNX graph run node by node with torch ops, as a trainable ``nn.Module`` that exports back to ONNX.

Why a converter of our own: onnx2torch 1.5.15 (its last release, 2024-08) hard-depends on torchvision, which cannot be
installed beside torch 2.13's CPU build (PyPI's torchvision fails to import against it; the matching pair is a
multi-GB CUDA build), and it has no DequantizeLinear converter, which OpenCV's SFace needs.

What becomes what:

* Nodes run in topological order, sorted here (old exports are not always sorted); nodes the output does not depend
  on are dropped. An op without a converter is an LrfrError naming the node, the op and the file, before anything runs.
* Nodes whose inputs are all constants (Constant, shape arithmetic on initializers, DequantizeLinear of quantised
  weights, Identity copies of shared initializers) are computed once, here. So block-, axis- and tensor-quantised
  weights become float ``nn.Parameter``s, and each Identity copy of a deduplicated initializer its own Parameter.
* Float constants the graph uses at run time are ``nn.Parameter``s (trainable), except scalars outside weight
  inputs (127.5, 1/128, eps, hard-swish's 3 and 6) and the operands of the in-graph input normalisation that
  :func:`..feeding.graph_normalisation` finds: those are fixed buffers, as weight decay would otherwise drift the
  input scaling. Conv/Gemm/MatMul/PRelu weights are Parameters whatever their size. Integer constants are buffers.
* BatchNormalization is a real BatchNorm module (weight/bias Parameters, running_mean/var buffers); with
  ``train_bn=False`` (the default) it uses its running statistics in train mode too and never updates them.
* QuantizeLinear -> DequantizeLinear on activations is fake quantisation: round and clamp to the integer range as
  onnxruntime does (outputs match), with a straight-through gradient (d out / d in = 1) so training still flows.
* Shapes stay tensors (Shape, Gather, Concat, ... trace as ONNX ops), Reshape's 0 copies the input's dimension and a
  fixed leading dimension is replaced by -1 (identical whenever the original shape was valid), so the module traces
  with ``torch.onnx.export(dynamo=False)`` with a dynamic batch axis.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ..errors import LrfrError
from .feeding import graph_normalisation, real_inputs

Fn = Callable[[list[Any], Any], list[Any]]
Builder = Callable[["NodeView"], Fn]

#: ONNX TensorProto element types -> torch dtypes (Cast, QuantizeLinear's output type).
DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
          9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}
#: Integer ranges of the quantised types (uint8, int8, uint16, int16, int32, int4, uint4).
QRANGES = {2: (0, 255), 3: (-128, 127), 4: (0, 65535), 5: (-32768, 32767), 6: (-2**31, 2**31 - 1),
           21: (0, 15), 22: (-8, 7)}


# --- the module ----------------------------------------------------------------------------------------------------

class GraphBatchNorm(nn.modules.batchnorm._BatchNorm):
    """An ONNX BatchNormalization: torch BatchNorm state; ``train_stats=False`` uses running statistics in train mode.

    A ``_BatchNorm`` so that the host's freezing helpers and ``convert_sync_batchnorm`` see it.
    """

    def __init__(self, num_features: int, eps: float, momentum: float, train_stats: bool):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.train_stats = train_stats

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an (N, C, ...) input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.train_stats:
            return super().forward(x)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


@dataclasses.dataclass
class Step:
    """One node: ``fn(inputs, module) -> outputs``; '' marks an input that is absent or was read at conversion."""

    label: str
    op: str
    fn: Fn
    inputs: list[str]
    outputs: list[str]
    module: str | None = None
    free: list[str] = dataclasses.field(default_factory=list)  # tensors no later step needs


class OnnxGraph(nn.Module):
    """Runs the converted steps: ``weights`` holds the Parameters, ``constants`` fixed tensors, ``norms`` the BNs."""

    def __init__(self, input_name: str, output_name: str, steps: list[Step], weights: dict[str, torch.Tensor],
                 constants: dict[str, torch.Tensor], norms: dict[str, GraphBatchNorm], source: str):
        super().__init__()
        self.input_name, self.output_name, self.steps, self.source = input_name, output_name, steps, source
        self.weights, self.constants = nn.Module(), nn.Module()
        self.lifted: list[tuple[str, str, str]] = []  # (ONNX tensor name, container, attribute)
        used = set(dir(nn.Module()))  # an initializer named "training" or "forward" must not shadow them
        for container, tensors in (("weights", weights), ("constants", constants)):
            for name, value in tensors.items():
                attr = _unique(_safe(name), used)
                if container == "weights":
                    self.weights.register_parameter(attr, nn.Parameter(value))
                else:
                    self.constants.register_buffer(attr, value, persistent=False)
                self.lifted.append((name, container, attr))
        self.norms = nn.ModuleDict(norms)

    @property
    def ops(self) -> list[str]:
        return sorted({step.op for step in self.steps})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env: dict[str, Any] = {name: getattr(getattr(self, container), attr) for name, container, attr in self.lifted}
        env[self.input_name] = x
        for step in self.steps:
            args = [env[name] if name else None for name in step.inputs]
            outs = step.fn(args, self.norms[step.module] if step.module else None)
            for name, value in zip(step.outputs, outs):
                if name:
                    env[name] = value
            for name in step.free:
                env.pop(name, None)
        return env[self.output_name]


# --- conversion ----------------------------------------------------------------------------------------------------

def convert(model: onnx.ModelProto, output_name: str, *, where: str, train_bn: bool = False) -> OnnxGraph:
    """The graph of ``model`` up to ``output_name`` as an :class:`OnnxGraph`; ``where`` names the file in errors."""
    return _Converter(model, where, train_bn).run(output_name)


class NodeView:
    """What a builder sees of one node: attributes, constant inputs (read at conversion) and the opset."""

    def __init__(self, node: onnx.NodeProto, label: str, converter: _Converter):
        self.node, self.label, self.converter = node, label, converter
        self.attrs = {a.name: _attr(a) for a in node.attribute}
        self.opset = converter.opset
        self.read: set[int] = set()  # inputs consumed here, not at run time
        self.weight_inputs: set[int] = set()  # inputs that are weights: Parameters whatever their size

    def has(self, i: int) -> bool:
        return len(self.node.input) > i and bool(self.node.input[i])

    def is_const(self, i: int) -> bool:
        return self.has(i) and self.node.input[i] in self.converter.static

    def const(self, i: int, what: str = "") -> torch.Tensor | None:
        """The constant value of input ``i`` (None when absent); an LrfrError when it is computed at run time."""
        if not self.has(i):
            return None
        name = self.node.input[i]
        if name not in self.converter.static:
            self.fail(f"its {what or f'input {i}'} ({name!r}) is computed at run time; only a constant is supported")
        self.read.add(i)
        return self.converter.static[name]

    def ints(self, i: int, what: str = "") -> list[int] | None:
        value = self.const(i, what)
        return None if value is None else [int(v) for v in value.reshape(-1).tolist()]

    def scalar(self, i: int, what: str = "") -> float | None:
        value = self.const(i, what)
        return None if value is None or value.numel() == 0 else float(value.reshape(-1)[0])

    def elem_type(self, i: int) -> int | None:
        return self.converter.elem_types.get(self.node.input[i]) if self.has(i) else None

    def weight(self, *indices: int) -> None:
        self.weight_inputs.update(indices)

    def fail(self, why: str) -> None:
        raise LrfrError(f"{self.converter.where}: node {self.label} (op {self.node.op_type}) cannot be converted: "
                        f"{why}.")


class _Converter:
    def __init__(self, model: onnx.ModelProto, where: str, train_bn: bool):
        self.model, self.graph, self.where, self.train_bn = model, model.graph, where, train_bn
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.static: dict[str, torch.Tensor] = {}
        self.elem_types: dict[str, int] = {}
        for tensor in self.graph.initializer:
            self.static[tensor.name] = self._tensor(tensor, f"initializer {tensor.name!r}")
            self.elem_types[tensor.name] = tensor.data_type
        self.batch_one = False  # a graph input of fixed batch 1: its Reshapes may bake that 1 in (see _reshape)
        self._shapes: dict[str, list[int]] | None = None
        self.sorted_nodes: list[onnx.NodeProto] = []
        if len(self.graph.sparse_initializer):
            raise LrfrError(f"{where}: the graph has sparse initializers, which cannot be converted; save the model "
                            "with dense initializers.")

    def _tensor(self, proto: onnx.TensorProto, what: str) -> torch.Tensor:
        try:
            return to_tensor(numpy_helper.to_array(proto))
        except Exception as exc:
            raise LrfrError(f"{self.where}: cannot read {what} ({type(exc).__name__}: {exc}); if the model keeps its "
                            "weights in an external data file, keep that file next to the .onnx.") from None

    def run(self, output_name: str) -> OnnxGraph:
        inputs = real_inputs(self.graph)
        if len(inputs) != 1:
            names = ", ".join(repr(i.name) for i in inputs) or "none"
            raise LrfrError(f"{self.where}: the graph takes {len(inputs)} inputs ({names}); a recognition model "
                            "takes one batch of faces.")
        input_name = inputs[0].name
        dims = inputs[0].type.tensor_type.shape.dim
        self.batch_one = bool(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == 1
        order = self._order(output_name, input_name)
        unsupported = [(label, node) for label, node in order if _op_key(node) not in OPS]
        if unsupported:
            lines = [f"node {label} (op {_op_key(node)}) cannot be converted" for label, node in unsupported[:5]]
            more = f" ({len(unsupported)} nodes in all)" if len(unsupported) > 5 else ""
            raise LrfrError(f"{self.where}: " + "; ".join(lines) + f"{more}; supported: {', '.join(sorted(OPS))}. "
                            "The model can still be evaluated as it is (lrfr eval runs it with onnxruntime); "
                            "importing it as a backbone needs every op of the path to the output converted.")
        steps: list[Step] = []
        modules: dict[str, GraphBatchNorm] = {}
        weight_uses: set[str] = set()
        for label, node in order:
            view = NodeView(node, label, self)
            fn = OPS[_op_key(node)](view)
            names = list(node.input)
            if all(not name or name in self.static for name in names):  # constant: compute it now
                args = [self.static[n] if n and i not in view.read else None for i, n in enumerate(names)]
                with torch.no_grad():
                    outs = fn(args, None)
                for name, value in zip(node.output, outs):
                    if name:
                        self.static[name] = value.detach() if isinstance(value, torch.Tensor) else value
                continue
            module_key = None
            made = fn.__dict__.pop("module", None)  # a BatchNorm; the step reaches it through OnnxGraph.norms
            if made is not None:
                module_key = _unique(_safe(node.name or node.output[0]), set(modules))
                modules[module_key] = made
            runtime = ["" if i in view.read else name for i, name in enumerate(names)]
            weight_uses.update(names[i] for i in view.weight_inputs if i < len(names) and names[i])
            steps.append(Step(label, node.op_type, fn, runtime, list(node.output), module_key))
        if output_name in self.static:
            raise LrfrError(f"{self.where}: the output {output_name!r} is a constant (it does not depend on the "
                            "input); name the embedding with 'output'.")
        weights, constants = self._lift(steps, weight_uses, input_name)
        _plan_frees(steps, output_name)
        return OnnxGraph(input_name, output_name, steps, weights, constants, modules, self.where)

    def static_shape(self, name: str) -> list[int] | None:
        """The inferred shape of tensor ``name`` when every dimension is known (onnx shape inference), else None."""
        if self._shapes is None:
            model = onnx.ModelProto()
            model.CopyFrom(self.model)
            del model.graph.node[:]
            model.graph.node.extend(self.sorted_nodes)  # inference reads nodes in file order
            try:
                inferred = onnx.shape_inference.infer_shapes(model).graph
            except Exception:  # inference is a help here, not a requirement
                inferred = self.graph
            self._shapes = {}
            for value in [*inferred.value_info, *inferred.input, *inferred.output]:
                dims = value.type.tensor_type.shape.dim
                if value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                    self._shapes[value.name] = [d.dim_value for d in dims]
        return self._shapes.get(name)

    def _order(self, output_name: str, input_name: str) -> list[tuple[str, onnx.NodeProto]]:
        """The nodes ``output_name`` depends on, topologically sorted (ties kept in file order)."""
        nodes = list(self.graph.node)
        producer: dict[str, int] = {}
        for i, node in enumerate(nodes):
            for name in node.output:
                if name:
                    producer[name] = i
        if output_name not in producer:
            raise LrfrError(f"{self.where}: no node computes {output_name!r}; the outputs are "
                            f"{', '.join(repr(o.name) for o in self.graph.output)}.")
        needed: set[int] = set()
        stack = [producer[output_name]]
        while stack:
            i = stack.pop()
            if i in needed:
                continue
            needed.add(i)
            for name in nodes[i].input:
                if not name or name == input_name or name in self.static:
                    continue
                if name not in producer:
                    raise LrfrError(f"{self.where}: node {label_of(nodes[i])} reads {name!r}, which no node, "
                                    "initializer or graph input provides; the file is broken.")
                stack.append(producer[name])
        deps = {i: {producer[n] for n in nodes[i].input if n in producer and producer[n] != i} for i in needed}
        users: dict[int, list[int]] = {i: [] for i in needed}
        for i, ds in deps.items():
            for d in ds:
                users[d].append(i)
        waiting = {i: len(ds) for i, ds in deps.items()}
        ready = [i for i, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for u in users[i]:
                waiting[u] -= 1
                if waiting[u] == 0:
                    heapq.heappush(ready, u)
        if len(order) != len(needed):
            stuck = ", ".join(label_of(nodes[i]) for i in sorted(set(needed) - set(order))[:3])
            raise LrfrError(f"{self.where}: the graph has a cycle (through {stuck}); the file is broken.")
        self.sorted_nodes = [nodes[i] for i in order]
        return [(label_of(nodes[i]), nodes[i]) for i in order]

    def _lift(self, steps: list[Step], weight_uses: set[str], input_name: str
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Constants read at run time -> Parameters (trainable) or fixed buffers (see the module docstring)."""
        normalising: set[str] = set()
        for node in graph_normalisation(self.graph, input_name)[0]:
            normalising.update(n for n in node.input if n in self.static)
        weights: dict[str, torch.Tensor] = {}
        constants: dict[str, torch.Tensor] = {}
        for step in steps:
            for name in step.inputs:
                if not name or name not in self.static or name in weights or name in constants:
                    continue
                value = self.static[name]
                trainable = value.is_floating_point() and name not in normalising and (
                    name in weight_uses or value.numel() > 1)
                (weights if trainable else constants)[name] = value.clone()
        return weights, constants


def _plan_frees(steps: list[Step], output_name: str) -> None:
    last: dict[str, int] = {}
    for i, step in enumerate(steps):
        for name in step.inputs:
            if name:
                last[name] = i
    for name, i in last.items():
        if name != output_name:
            steps[i].free.append(name)


def label_of(node: onnx.NodeProto) -> str:
    return repr(node.name) if node.name else f"(output {node.output[0]!r})"


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _safe(name: str) -> str:
    return re.sub(r"\W", "_", name) or "t"


def _unique(name: str, used: set[str]) -> str:
    candidate, k = name, 1
    while candidate in used:
        k += 1
        candidate = f"{name}_{k}"
    used.add(candidate)
    return candidate


def _attr(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return to_tensor(numpy_helper.to_array(value))
    return value


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """A torch tensor of an ONNX array; int4/uint4/uint16..64 as int64, bfloat16/float8 as float32 (exact)."""
    name = str(array.dtype)
    if array.dtype in (np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_):
        return torch.from_numpy(np.array(array, copy=True))
    if "int" in name:
        return torch.from_numpy(array.astype(np.int64))
    if "float" in name:
        return torch.from_numpy(array.astype(np.float32))
    raise ValueError(f"unsupported tensor type {name}")


# --- ops -----------------------------------------------------------------------------------------------------------

OPS: dict[str, Builder] = {}


def op(*names: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for name in names:
            OPS[name] = builder
        return builder
    return register


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _elementwise(fn: Callable[..., torch.Tensor]) -> Builder:
    return lambda view: lambda ins, _: [fn(*[x for x in ins if x is not None])]


for _name, _fn in {"Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Abs": torch.abs,
                   "Neg": torch.neg, "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log, "Erf": torch.erf,
                   "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil,
                   "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow,
                   "Identity": lambda x: x}.items():
    OPS[_name] = _elementwise(_fn)


@op("Div")
def _div(view: NodeView) -> Fn:
    def run(ins: list, _: Any) -> list:
        a, b = ins
        if not a.is_floating_point() and not b.is_floating_point():
            return [torch.div(a, b, rounding_mode="trunc")]  # ONNX integer division truncates
        return [a / b]
    return run


@op("Sum", "Mean", "Max", "Min")
def _variadic(view: NodeView) -> Fn:
    kind = view.node.op_type
    combine = {"Sum": torch.add, "Mean": torch.add, "Max": torch.maximum, "Min": torch.minimum}[kind]

    def run(ins: list, _: Any) -> list:
        out = ins[0]
        for x in ins[1:]:
            out = combine(out, x)
        return [out / len(ins) if kind == "Mean" else out]
    return run


@op("Dropout")
def _dropout(view: NodeView) -> Fn:
    """Inference semantics (ONNX's default; torch's exporter writes training-mode dropout only in training exports)."""
    view.read.update({1, 2})
    if len(view.node.output) > 1 and view.node.output[1]:  # the mask, when something reads it: all kept
        return lambda ins, _: [ins[0], torch.ones_like(ins[0], dtype=torch.bool)]
    return lambda ins, _: [ins[0]]


@op("LeakyRelu")
def _leaky_relu(view: NodeView) -> Fn:
    alpha = float(view.attrs.get("alpha", 0.01))
    return lambda ins, _: [F.leaky_relu(ins[0], alpha)]


@op("Elu")
def _elu(view: NodeView) -> Fn:
    alpha = float(view.attrs.get("alpha", 1.0))
    return lambda ins, _: [F.elu(ins[0], alpha)]


@op("HardSigmoid")
def _hard_sigmoid(view: NodeView) -> Fn:
    alpha, beta = float(view.attrs.get("alpha", 0.2)), float(view.attrs.get("beta", 0.5))
    return lambda ins, _: [torch.clamp(ins[0] * alpha + beta, 0.0, 1.0)]


@op("HardSwish")
def _hard_swish(view: NodeView) -> Fn:
    return lambda ins, _: [F.hardswish(ins[0])]


@op("Clip")
def _clip(view: NodeView) -> Fn:
    if view.opset < 11:
        low, high = view.attrs.get("min"), view.attrs.get("max")
    else:
        low, high = view.scalar(1, "min"), view.scalar(2, "max")
    if low is None and high is None:
        return lambda ins, _: [ins[0]]
    return lambda ins, _: [torch.clamp(ins[0], low, high)]


@op("PRelu")
def _prelu(view: NodeView) -> Fn:
    """Per-channel slopes ((C,), (C, 1, 1), (1, C, 1, 1)) run as F.prelu, which exports back as PRelu.

    A 1-D slope of C on an (N, C, H, W) input whose width is not C cannot broadcast the ONNX way (onnxruntime rejects
    the file); it is read as per channel, what the exporter meant. Any other shape broadcasts as ONNX says.
    """
    view.weight(1)

    def run(ins: list, _: Any) -> list:
        x, slope = ins
        shape = [int(s) for s in slope.shape]
        if slope.numel() == 1:
            return [F.prelu(x, slope.reshape(1))]
        c = int(x.shape[1]) if x.dim() > 1 else -1
        channel = len(shape) - x.dim() + 1  # the slope axis that lines up with x's axis 1 (right-aligned)
        aligned = 0 <= channel < len(shape) and shape[channel] == c == slope.numel()
        rejected = len(shape) == 1 and x.dim() > 2 and shape[0] == c and int(x.shape[-1]) != c
        if aligned or rejected:
            return [F.prelu(x, slope.reshape(-1))]
        return [torch.where(x >= 0, x, x * slope)]
    return run


def _resolve_pads(auto: str, pads: list[int], size: list[int], kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] after auto_pad (SAME_UPPER puts the odd pixel at the end)."""
    nd = len(kernel)
    if auto == "VALID":
        return [0] * 2 * nd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - small if auto == "SAME_UPPER" else small)
        return begin + end
    return pads


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX [b1..bn, e1..en] for the last n dims -> F.pad's (b_n, e_n, ..., b_1, e_1)."""
    nd = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


def _spatial(x: torch.Tensor) -> list[int]:
    return [int(s) for s in x.shape[2:]]


@op("Conv")
def _conv(view: NodeView) -> Fn:
    view.weight(1, 2)
    attrs = view.attrs
    group, auto = int(attrs.get("group", 1)), attrs.get("auto_pad", "NOTSET")

    def run(ins: list, _: Any) -> list:
        x, w = ins[0], ins[1]
        b = ins[2] if len(ins) > 2 else None
        nd = w.dim() - 2
        kernel = list(attrs.get("kernel_shape", w.shape[2:]))
        strides, dilations = list(attrs.get("strides", [1] * nd)), list(attrs.get("dilations", [1] * nd))
        pads = _resolve_pads(auto, list(attrs.get("pads", [0] * 2 * nd)), _spatial(x), kernel, strides, dilations)
        if pads[:nd] == pads[nd:]:
            padding = pads[:nd]
        else:
            x, padding = F.pad(x, _torch_pad(pads)), [0] * nd
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        return [conv(x, w, b, strides, padding, dilations, group)]
    return run


@op("BatchNormalization")
def _batch_norm(view: NodeView) -> Fn:
    if view.attrs.get("spatial", 1) != 1 and not (view.is_const(1) and view.const(1).dim() == 1):
        view.fail("spatial=0 with per-activation statistics is not supported")  # 1-D ones (old mxnet) are per channel
    if any(view.node.output[1:]) or view.attrs.get("training_mode", 0):
        view.fail("a training-mode BatchNormalization (with mean/var outputs) is not supported; export in eval mode")
    eps = float(view.attrs.get("epsilon", 1e-5))
    momentum = 1.0 - float(view.attrs.get("momentum", 0.9))  # ONNX keeps `momentum` of the old value; torch the new
    if all(view.is_const(i) for i in (1, 2, 3, 4)):
        scale, bias, mean, var = (view.const(i) for i in (1, 2, 3, 4))
        module = GraphBatchNorm(scale.numel(), eps, momentum, view.converter.train_bn)
        with torch.no_grad():
            for target, value in ((module.weight, scale), (module.bias, bias), (module.running_mean, mean),
                                  (module.running_var, var)):
                target.copy_(value.reshape(-1))

        def run(ins: list, norm: Any) -> list:
            return [norm(ins[0])]
        run.module = module  # type: ignore[attr-defined]
        return run
    view.weight(1, 2)
    return lambda ins, _: [F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, eps)]


@op("Gemm")
def _gemm(view: NodeView) -> Fn:
    view.weight(1, 2)
    alpha, beta = float(view.attrs.get("alpha", 1.0)), float(view.attrs.get("beta", 1.0))
    trans_a, trans_b = int(view.attrs.get("transA", 0)), int(view.attrs.get("transB", 0))

    def run(ins: list, _: Any) -> list:
        a, b = ins[0], ins[1]
        c = ins[2] if len(ins) > 2 else None
        if trans_a:
            a = a.t()
        weight = b if trans_b else b.t()  # (N, K), as F.linear wants
        if alpha == 1.0 and beta == 1.0 and (c is None or c.dim() == 1):
            return [F.linear(a, weight, c)]
        y = F.linear(a, weight) * alpha
        return [y if c is None else y + beta * c]
    return run


@op("MatMul")
def _matmul(view: NodeView) -> Fn:
    view.weight(0, 1)
    return lambda ins, _: [torch.matmul(ins[0], ins[1])]


@op("Flatten")
def _flatten(view: NodeView) -> Fn:
    axis = int(view.attrs.get("axis", 1))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        a = _axis(axis, x.dim())
        if a == 0:
            return [x.reshape(1, -1)]
        return [x.flatten(a).flatten(0, a - 1) if a > 1 else x.flatten(1) if x.dim() > 1 else x.reshape(-1, 1)]
    return run


@op("Reshape")
def _reshape(view: NodeView) -> Fn:
    allow_zero = int(view.attrs.get("allowzero", 0))
    if view.opset < 5:
        static: list[int] | None = list(view.attrs["shape"])
    else:
        static = view.ints(1, "shape") if view.is_const(1) else None
    if static is not None and view.converter.batch_one and static[:1] == [1]:
        have = view.converter.static_shape(view.node.input[0])
        if have and have[0] == 1:  # a batch-1 export's baked-in batch: the concrete shape, then the batch as -1
            static = [-1, *_concrete_shape(static, have, allow_zero)[1:]]
    if static is not None:
        zeros = [i for i, d in enumerate(static) if d == 0] if not allow_zero else []
        # a fixed leading size becomes -1: the same shape whenever the original was valid, and the batch stays dynamic
        lead = bool(static) and -1 not in static and 0 not in static

        def run(ins: list, _: Any) -> list:
            x = ins[0]
            dims: list[Any] = list(static)
            for i in zeros:
                dims[i] = x.shape[i]
            if lead:
                dims[0] = -1
            return [x.reshape(dims)]
        return run

    def run_dynamic(ins: list, _: Any) -> list:
        x, shape = ins
        n = int(shape.shape[0])
        if not allow_zero:  # ONNX's 0: copy the input's size
            have = torch._shape_as_tensor(x).to(shape.device)[:n]
            if int(have.shape[0]) < n:
                have = torch.cat([have, torch.ones(n - int(have.shape[0]), dtype=have.dtype, device=have.device)])
            shape = torch.where(shape == 0, have, shape)
        return [x.reshape([shape[i] for i in range(n)])]
    return run_dynamic


def _concrete_shape(shape: list[int], have: list[int], allow_zero: int) -> list[int]:
    """ONNX Reshape's target for an input of shape ``have``: 0 copies (unless allowzero), -1 is inferred."""
    out = [have[i] if d == 0 and not allow_zero else d for i, d in enumerate(shape)]
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(have) // known if known else 0
    return out


@op("Transpose")
def _transpose(view: NodeView) -> Fn:
    perm = view.attrs.get("perm")
    return lambda ins, _: [ins[0].permute(list(perm) if perm is not None else list(reversed(range(ins[0].dim()))))]


@op("Cast")
def _cast(view: NodeView) -> Fn:
    to = int(view.attrs["to"])
    if to not in DTYPES:
        view.fail(f"casting to {onnx.TensorProto.DataType.Name(to)} is not supported")
    return lambda ins, _: [ins[0].to(DTYPES[to])]


@op("Constant")
def _constant(view: NodeView) -> Fn:
    attrs = view.attrs
    if "value" in attrs:
        value = attrs["value"]
        proto = next(a.t for a in view.node.attribute if a.name == "value")
        view.converter.elem_types[view.node.output[0]] = proto.data_type
    elif "value_float" in attrs or "value_floats" in attrs:
        value = torch.tensor(attrs.get("value_float", attrs.get("value_floats")), dtype=torch.float32)
    elif "value_int" in attrs or "value_ints" in attrs:
        value = torch.tensor(attrs.get("value_int", attrs.get("value_ints")), dtype=torch.int64)
    else:
        view.fail(f"a Constant holding {', '.join(attrs) or 'nothing'} is not supported")
    return lambda ins, _: [value]


@op("Shape")
def _shape(view: NodeView) -> Fn:
    start, end = view.attrs.get("start", 0), view.attrs.get("end")
    return lambda ins, _: [torch._shape_as_tensor(ins[0]).to(ins[0].device)[start:end]]


@op("Gather")
def _gather(view: NodeView) -> Fn:
    axis = int(view.attrs.get("axis", 0))
    static = view.const(1, "indices") if view.is_const(1) else None

    def run(ins: list, _: Any) -> list:
        data = ins[0]
        a = _axis(axis, data.dim())
        idx = static.to(data.device) if static is not None else ins[1]
        if static is not None and idx.dim() == 0:
            i = int(idx)
            return [data.select(a, i if i >= 0 else i + int(data.shape[a]))]
        idx = torch.where(idx < 0, idx + data.shape[a], idx)
        out = torch.index_select(data, a, idx.reshape(-1))
        if idx.dim() == 1:
            return [out]
        return [out.reshape(list(data.shape[:a]) + list(idx.shape) + list(data.shape[a + 1:]))]
    return run


def _axes(view: NodeView, attr_until: int) -> list[int] | None:
    """Axes from the attribute (opsets below ``attr_until``) or from input 1."""
    if view.opset < attr_until:
        axes = view.attrs.get("axes")
        return None if axes is None else list(axes)
    return view.ints(1, "axes")


@op("Unsqueeze")
def _unsqueeze(view: NodeView) -> Fn:
    axes = _axes(view, 13) or []

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        rank = x.dim() + len(axes)
        for a in sorted(_axis(a, rank) for a in axes):
            x = x.unsqueeze(a)
        return [x]
    return run


@op("Squeeze")
def _squeeze(view: NodeView) -> Fn:
    axes = _axes(view, 13)

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        if axes is None:
            return [x.squeeze()]
        for a in sorted({_axis(a, x.dim()) for a in axes}, reverse=True):  # one at a time: what the exporter traces
            x = x.squeeze(a)
        return [x]
    return run


@op("Concat")
def _concat(view: NodeView) -> Fn:
    axis = int(view.attrs["axis"])
    return lambda ins, _: [torch.cat([x for x in ins if x is not None], _axis(axis, ins[0].dim()))]


@op("Split")
def _split(view: NodeView) -> Fn:
    axis = int(view.attrs.get("axis", 0))
    sizes = view.attrs.get("split") if view.opset < 13 else view.ints(1, "split")
    parts = int(view.attrs.get("num_outputs", len(view.node.output)))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        a = _axis(axis, x.dim())
        if sizes:
            return list(torch.split(x, list(sizes), a))
        return list(torch.split(x, math.ceil(int(x.shape[a]) / parts), a))
    return run


@op("Slice")
def _slice(view: NodeView) -> Fn:
    if view.opset < 10:
        starts, ends = list(view.attrs["starts"]), list(view.attrs["ends"])
        axes, steps = view.attrs.get("axes"), None
    else:
        starts, ends = view.ints(1, "starts"), view.ints(2, "ends")
        axes, steps = view.ints(3, "axes"), view.ints(4, "steps")
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if 0 in steps:
        view.fail("a step of 0")

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        index: list[Any] = [slice(None)] * x.dim()
        reverse = []
        for a, s, e, st in zip(axes, starts, ends, steps):
            a = _axis(a, x.dim())
            if st > 0:
                index[a] = slice(s, e, st)
            else:
                reverse.append((a, s, e, st))
        x = x[tuple(index)]
        for a, s, e, st in reverse:  # torch has no negative steps: pick the indices ONNX would
            n = int(x.shape[a])
            s = min(max(s + n if s < 0 else s, -1), n - 1)
            e = min(max(e + n if e < 0 else e, -1), n - 1)
            picked = torch.tensor(list(range(s, e, st)), dtype=torch.int64, device=x.device)
            x = torch.index_select(x, a, picked)
        return [x]
    return run


@op("Pad")
def _pad(view: NodeView) -> Fn:
    mode = view.attrs.get("mode", "constant")
    if mode not in ("constant", "reflect", "edge"):
        view.fail(f"mode {mode!r} is not supported (constant, reflect, edge are)")
    if view.opset < 11:
        pads, value, axes = list(view.attrs.get("pads", view.attrs.get("paddings", []))), \
            float(view.attrs.get("value", 0.0)), None
    else:
        pads, value, axes = view.ints(1, "pads"), view.scalar(2, "constant_value") or 0.0, view.ints(3, "axes")

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        rank = x.dim()
        full = [0] * 2 * rank
        used = [_axis(a, rank) for a in axes] if axes is not None else list(range(rank))
        k = len(used)
        for j, a in enumerate(used):
            full[a], full[a + rank] = pads[j], pads[j + k]
        first = next((a for a in range(rank) if full[a] or full[a + rank]), rank)
        if first == rank:
            return [x]
        sub = full[first:rank] + full[rank + first:]
        torch_pads = _torch_pad(sub)
        if mode == "constant":
            return [F.pad(x, torch_pads, value=value)]
        return [F.pad(x, torch_pads, mode="reflect" if mode == "reflect" else "replicate")]
    return run


def _pool_args(attrs: dict[str, Any], x: torch.Tensor) -> tuple[int, list[int], list[int], list[int], list[int]]:
    """(spatial rank, kernel, strides, dilations, ONNX pads after auto_pad) of a pooling node on ``x``."""
    nd = x.dim() - 2
    kernel = list(attrs["kernel_shape"])
    strides, dilations = list(attrs.get("strides", [1] * nd)), list(attrs.get("dilations", [1] * nd))
    pads = _resolve_pads(attrs.get("auto_pad", "NOTSET"), list(attrs.get("pads", [0] * 2 * nd)), _spatial(x), kernel,
                         strides, dilations)
    return nd, kernel, strides, dilations, pads


def _symmetric(pads: list[int], kernel: list[int]) -> bool:
    """Whether torch's pooling can pad itself (the same on both sides, at most half the kernel)."""
    nd = len(kernel)
    return pads[:nd] == pads[nd:] and all(p <= k // 2 for p, k in zip(pads, kernel))


@op("MaxPool")
def _max_pool(view: NodeView) -> Fn:
    if len(view.node.output) > 1 and view.node.output[1]:
        view.fail("the Indices output is not supported")
    attrs = view.attrs
    ceil = bool(attrs.get("ceil_mode", 0))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        nd, kernel, strides, dilations, pads = _pool_args(attrs, x)
        padding = pads[:nd]
        if not _symmetric(pads, kernel):
            x, padding = F.pad(x, _torch_pad(pads), value=float("-inf")), [0] * nd
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return [pool(x, kernel, strides, padding, dilations, ceil_mode=ceil)]
    return run


@op("AveragePool")
def _avg_pool(view: NodeView) -> Fn:
    attrs = view.attrs
    if any(d != 1 for d in attrs.get("dilations", [])):
        view.fail("dilated average pooling is not supported")
    ceil, include = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        nd, kernel, strides, _dilations, pads = _pool_args(attrs, x)
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        if _symmetric(pads, kernel):
            return [pool(x, kernel, strides, pads[:nd], ceil, include)]
        out = pool(F.pad(x, _torch_pad(pads)), kernel, strides, 0, ceil, True)
        if include:
            return [out]
        ones = F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads))  # divide by the real pixels of each window
        return [out / pool(ones, kernel, strides, 0, ceil, True)]
    return run


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(view: NodeView) -> Fn:
    average = view.node.op_type == "GlobalAveragePool"

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        dims = tuple(range(2, x.dim()))
        return [x.mean(dims, keepdim=True) if average else x.amax(dims, keepdim=True)]
    return run


@op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2")
def _reduce(view: NodeView) -> Fn:
    kind = view.node.op_type
    axes = _axes(view, 13 if kind == "ReduceSum" else 18)
    keep = bool(view.attrs.get("keepdims", 1))
    noop = bool(view.attrs.get("noop_with_empty_axes", 0))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        if not axes:
            if noop:
                return [x]
            dims = tuple(range(x.dim()))
        else:
            dims = tuple(_axis(a, x.dim()) for a in axes)
        if kind == "ReduceMean":
            return [x.mean(dims, keepdim=keep)]
        if kind == "ReduceSum":
            return [x.sum(dims, keepdim=keep)]
        if kind == "ReduceMax":
            return [x.amax(dims, keepdim=keep)]
        if kind == "ReduceMin":
            return [x.amin(dims, keepdim=keep)]
        return [torch.linalg.vector_norm(x, 2, dims, keepdim=keep)]
    return run


@op("Softmax")
def _softmax(view: NodeView) -> Fn:
    legacy = view.opset < 13  # before opset 13: softmax over the input flattened to 2-D at `axis`
    axis = int(view.attrs.get("axis", 1 if legacy else -1))

    def run(ins: list, _: Any) -> list:
        x = ins[0]
        a = _axis(axis, x.dim())
        if legacy and a < x.dim() - 1:
            return [torch.softmax(x.flatten(a), a).reshape(x.shape)]
        return [torch.softmax(x, a)]
    return run


@op("LpNormalization")
def _lp_norm(view: NodeView) -> Fn:
    axis, p = int(view.attrs.get("axis", -1)), int(view.attrs.get("p", 2))
    return lambda ins, _: [ins[0] / torch.linalg.vector_norm(ins[0], p, _axis(axis, ins[0].dim()), keepdim=True)]


def _q_broadcast(t: torch.Tensor | None, x: torch.Tensor, axis: int, block: int) -> Any:
    """A scale / zero point shaped to broadcast against ``x``: per tensor, per axis, or per block along ``axis``."""
    if t is None:
        return 0
    if t.numel() == 1 and t.dim() <= 1:
        return t.reshape(())
    a = _axis(axis, x.dim())
    if block:
        return t.repeat_interleave(block, dim=a).narrow(a, 0, int(x.shape[a]))
    shape = [1] * x.dim()
    shape[a] = -1
    return t.reshape(shape)


@op("DequantizeLinear")
def _dequantize(view: NodeView) -> Fn:
    """Constant quantised weights fold into float Parameters; on activations, the second half of fake quantisation."""
    axis, block = int(view.attrs.get("axis", 1)), int(view.attrs.get("block_size", 0))

    def run(ins: list, _: Any) -> list:
        x, scale = ins[0], ins[1]
        zero = _q_broadcast(ins[2] if len(ins) > 2 else None, x, axis, block)
        s = _q_broadcast(scale, x, axis, block)
        if x.is_floating_point():  # fake-quantised activations: integer values carried in floats
            return [(x - zero) * s]
        centred = x.to(torch.int64) - (zero.to(torch.int64) if isinstance(zero, torch.Tensor) else zero)
        return [centred.to(scale.dtype) * s]
    return run


@op("QuantizeLinear")
def _quantize(view: NodeView) -> Fn:
    """Fake quantisation: ``round(x / scale) + zero`` clamped to the integer range (as onnxruntime computes it),
    kept in float with a straight-through gradient; the DequantizeLinear after it maps it back."""
    axis, block = int(view.attrs.get("axis", 1)), int(view.attrs.get("block_size", 0))
    elem = view.elem_type(2) or int(view.attrs.get("output_dtype", 0)) or onnx.TensorProto.UINT8
    if elem not in QRANGES:
        view.fail(f"quantising to {onnx.TensorProto.DataType.Name(elem)} is not supported")
    low, high = QRANGES[elem]

    def run(ins: list, _: Any) -> list:
        x, scale = ins[0], ins[1]
        zero = ins[2] if len(ins) > 2 else None
        s = _q_broadcast(scale, x, axis, block)
        z = _q_broadcast(zero.to(x.dtype) if zero is not None else None, x, axis, block)
        v = x / s
        q = torch.clamp(torch.round(v) + z, low, high)
        return [q + (v - v.detach())]  # exactly q forward (v - v is 0), gradient 1 / scale backward
    return run
