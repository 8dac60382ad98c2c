"""How an ONNX recognition model wants to be fed, read from what its graph does to its input.

InsightFace's ``ArcFaceONNX`` feeds RGB ``(x - 127.5) / 127.5`` unless the *names* of the first 8 graph nodes start
with Sub*/Mul* (then raw 0..255 pixels). That misses graphs that normalise their own input behind other first nodes:
OpenCV Zoo's SFace opens with DequantizeLinear nodes of its block-quantised weights, so it was normalised twice
(accuracy 0.84 instead of 0.97, no warning). Here the input tensor itself is followed: if it reaches Sub/Add/Mul/Div
with a constant operand, or BatchNormalization, before the first Conv/Gemm/MatMul, the graph normalises its own
input and gets raw pixels; otherwise it gets ``(x - 127.5) / 127.5``. Channel order cannot be read from a graph:
RGB, InsightFace's order, unless the user says ``--bgr``. A model exported by lrfr declares its feeding in its
metadata (``lrfr.input_mean``, ``lrfr.input_std``, ``lrfr.channel_order``); that declaration comes first.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ..errors import LrfrError
from ..ops.preprocess import FEEDING_METADATA, INPUT_MEAN, INPUT_STD, insightface_skips_normalisation

#: The convention of ``lrfr_plugins.ops.preprocess.to_network_input`` (and of ArcFaceONNX for graphs without
#: in-graph normalisation); tests/test_onnx_feeding.py checks that the two give the same numbers.
DEFAULT_MEAN = INPUT_MEAN
DEFAULT_STD = INPUT_STD
INPUT_SIZE = 112

#: Ops that carry the pixels on unchanged in scale (layout, quantisation round trips, channel swaps, padding).
PASS_THROUGH = frozenset({
    "Cast", "CastLike", "Identity", "Transpose", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "QuantizeLinear",
    "DequantizeLinear", "Slice", "Split", "Concat", "Gather", "GatherElements", "Pad", "Expand", "Tile", "Resize",
    "Upsample"})
#: The first learned layer: normalisation found after it is the network's own business, not the input's.
FIRST_LAYER = frozenset({
    "Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"})
AFFINE = frozenset({"Sub", "Add", "Mul", "Div"})
#: Ops through which a constant stays a constant (quantised or reshaped mean/scale tensors).
CONSTANT_THROUGH = frozenset({
    "DequantizeLinear", "Cast", "CastLike", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Expand",
    "Flatten"})
RGB_DEFAULT = "RGB (InsightFace's order; --bgr if the model was trained on BGR)"


@dataclasses.dataclass(frozen=True)
class Feeding:
    """What the model is fed: ``(pixel - mean) / std`` of 0..255 pixels in ``bgr`` or RGB order, and why."""

    input_name: str          # the real graph input (not an initializer: old mxnet exports list weights as inputs)
    output_name: str
    batch: int | None        # a fixed batch dimension, or None when dynamic
    mean: float              # model input = (pixel - mean) / std on 0..255 pixels
    std: float
    bgr: bool                # channel order the model is fed
    inferred: bool           # True when mean/std came from reading the graph, False when the user gave them
    reason: str              # one line: "inferred: ..." or "given: ..."
    in_graph: list[str]      # the in-graph normalisation nodes found, "Sub 'name'", may be empty
    insightface_feeds_same: bool   # whether ArcFaceONNX (first-8-node-names rule) would feed the same mean/std
    bgr_given: bool = False  # whether the channel order came from the user (--bgr/--rgb)
    insightface_mean: float = DEFAULT_MEAN  # what ArcFaceONNX would feed instead
    insightface_std: float = DEFAULT_STD

    def describe(self) -> str:
        """One line for tables: "RGB (...), (x - 127.5) / 127.5, inferred: ..."."""
        order = ("BGR (given: --bgr)" if self.bgr else "RGB (given: --rgb)") if self.bgr_given else RGB_DEFAULT
        return f"{order}, {formula(self.mean, self.std)}, {self.reason}"

    def insightface_warning(self) -> str | None:
        """Why and how an InsightFace pipeline must be told, when ArcFaceONNX would feed this model differently."""
        if self.insightface_feeds_same:
            return None
        return (f"warning: InsightFace's ArcFaceONNX would feed this model "
                f"{formula(self.insightface_mean, self.insightface_std)} instead of {formula(self.mean, self.std)} "
                "(it decides from the names of the first 8 graph nodes only). In an InsightFace pipeline set "
                f"rec.input_mean = {float(self.mean)!r}; rec.input_std = {float(self.std)!r} after "
                "rec = insightface.model_zoo.get_model(...).")

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, for result files (with the one-line summary and the InsightFace warning, or None)."""
        return {**dataclasses.asdict(self), "summary": self.describe(),
                "insightface_warning": self.insightface_warning()}

    def to_model_input(self, images: torch.Tensor) -> np.ndarray:
        """uint8 RGB (N, 3, 112, 112) -> float32 (N, 3, 112, 112) as the model wants it (channels flipped for BGR)."""
        if images.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {images.dtype}")
        if self.bgr:
            images = images.flip(1)
        return images.cpu().float().sub_(self.mean).div_(self.std).numpy()


def formula(mean: float, std: float) -> str:
    return "raw 0..255" if (mean, std) == (0.0, 1.0) else f"(x - {mean:g}) / {std:g}"


def load_onnx(path: str | pathlib.Path, *, external_data: bool = True) -> onnx.ModelProto:
    """The model, or an LrfrError naming the file when it is not ONNX (onnx's own errors are protobuf noise)."""
    try:
        model = onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise LrfrError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {first}). Give an ONNX recognition "
                        "model (.onnx); for a PyTorch model give its run directory or checkpoint instead.") from None
    if not model.graph.node:
        raise LrfrError(f"{path}: not a readable ONNX model (it holds no graph nodes). Give an ONNX recognition "
                        "model (.onnx); for a PyTorch model give its run directory or checkpoint instead.")
    return model


def real_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """graph.input without the initializers (old mxnet exports list every weight as a graph input too)."""
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return [value for value in graph.input if value.name not in constants]


def node_label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else f"{node.op_type} (output '{node.output[0]}')"


class _Graph:
    """Producers, consumers and constant values of one graph; node order in the file is not trusted."""

    def __init__(self, graph: onnx.GraphProto):
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[int]] = collections.defaultdict(list)
        self.nodes = list(graph.node)
        for i, node in enumerate(self.nodes):
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name and i not in self.consumers[name]:
                    self.consumers[name].append(i)
        self._constant: dict[str, tuple[bool, np.ndarray | None]] = {}

    def constant(self, name: str, depth: int = 0) -> tuple[bool, np.ndarray | None]:
        """(is it a constant, its value when it can be computed) for a tensor name."""
        if name not in self._constant:
            self._constant[name] = self._find_constant(name, depth)
        return self._constant[name]

    def _find_constant(self, name: str, depth: int) -> tuple[bool, np.ndarray | None]:
        if name in self.initializers:
            return True, _array(self.initializers[name])
        node = self.producer.get(name)
        if node is None or depth > 32:
            return False, None
        if node.op_type in ("Constant", "ConstantOfShape"):
            return True, _constant_node_value(node)
        if node.op_type not in CONSTANT_THROUGH:
            return False, None
        parts = [self.constant(x, depth + 1) if x else (True, None) for x in node.input]
        if not all(is_const for is_const, _ in parts):
            return False, None
        values = [value for _, value in parts]
        try:
            if node.op_type == "DequantizeLinear":
                x, scale = values[0].astype(np.float64), values[1].astype(np.float64)
                zero = values[2].astype(np.float64) if len(values) > 2 and values[2] is not None else 0.0
                return True, (x - zero) * scale
            return True, values[0].astype(np.float64)  # Cast and the reshaping ops keep the values
        except (AttributeError, ValueError, IndexError):  # a value not computable (external data, per-axis)
            return True, None


def _array(tensor: onnx.TensorProto) -> np.ndarray | None:
    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # external data not loaded, or a type numpy lacks: the value is only for the message
        return None


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            return _array(value)
        if isinstance(value, (int, float, list)) and attribute.name.startswith("value"):
            try:
                return np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):  # value_strings
                return None
    return None


def _show_value(value: np.ndarray | None) -> str:
    if value is None or value.size == 0 or not np.issubdtype(value.dtype, np.number):
        return ""
    flat = value.astype(np.float64).ravel()
    if np.all(flat == flat[0]):
        return f" {flat[0]:g}"
    if flat.size <= 4:
        return " [" + ", ".join(f"{v:g}" for v in flat) + "]"
    return ""


def graph_normalisation(graph: onnx.GraphProto, input_name: str) -> tuple[list[onnx.NodeProto], str]:
    """The nodes that normalise ``input_name`` before the first learned layer, and a one-line reason.

    Walks forward from the input through pass-through ops (casts, layout, quantisation, channel swaps, padding)
    until Conv/ConvInteger/QLinearConv/Gemm/MatMul. Sub/Add/Mul/Div with a constant other operand (an
    initializer or Constant, possibly through DequantizeLinear/Cast) and BatchNormalization on the way count as
    the graph normalising its own input. Neither the position of nodes nor their names are looked at.
    """
    index = _Graph(graph)
    found: list[tuple[onnx.NodeProto, str]] = []
    first_layers: list[onnx.NodeProto] = []
    seen_tensors, seen_nodes = {input_name}, set()
    frontier = collections.deque([input_name])
    while frontier:
        tensor = frontier.popleft()
        for i in index.consumers.get(tensor, []):
            if i in seen_nodes:
                continue
            seen_nodes.add(i)
            node = index.nodes[i]
            op = node.op_type
            if op in FIRST_LAYER:
                first_layers.append(node)
                continue
            if op in AFFINE:
                others = [x for x in node.input if x != tensor]
                if len(others) == 1:
                    is_const, value = index.constant(others[0])
                    if is_const:
                        found.append((node, _show_value(value)))
            elif op == "BatchNormalization" and node.input and node.input[0] == tensor:
                found.append((node, ""))
            elif op not in PASS_THROUGH:
                continue  # Shape, Size, ... : not pixels any more
            for name in node.output:
                if name and name not in seen_tensors:
                    seen_tensors.add(name)
                    frontier.append(name)
    if first_layers:
        ops = sorted({n.op_type for n in first_layers})
        names = ", ".join(repr(n.name or n.output[0]) for n in first_layers[:3])
        before = f"before the first {'/'.join(ops)} ({names})"
    else:
        before = "before any Conv/Gemm/MatMul"
    if found:
        steps = ", ".join(f"{node.op_type}{value} (node {node.name or node.output[0]!r})" for node, value in found)
        return [node for node, _ in found], f"the input reaches {steps} {before}: the graph normalises its own input"
    return [], (f"no Sub/Add/Mul/Div with a constant nor BatchNormalization on the input {before}: "
                "the graph does not normalise its input")


def read_feeding(model: onnx.ModelProto, path: str | pathlib.Path, *, mean: float | None = None,
                 std: float | None = None, bgr: bool | None = None, output: str | None = None) -> Feeding:
    """Check that ``model`` is a recognizer lrfr can feed and say how: what the user gave, else what the graph says."""
    graph = model.graph
    inputs = real_inputs(graph)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise LrfrError(f"{path}: the graph takes {len(inputs)} inputs ({names}); a recognition model takes one, "
                        "a batch of aligned 112x112 RGB faces (N, 3, 112, 112).")
    value = inputs[0]
    if not value.type.HasField("tensor_type"):
        raise LrfrError(f"{path}: the input {value.name!r} is not a tensor; a recognition model takes a float tensor "
                        "of aligned 112x112 RGB faces (N, 3, 112, 112).")
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(tensor_type.elem_type).lower()
        raise LrfrError(f"{path}: the input {value.name!r} is {kind}; lrfr feeds float32 pixels, (x - mean) / std. "
                        "Use (or re-export) the model with a float32 (N, 3, 112, 112) input; a model with a uint8 or "
                        "integer input does its own preprocessing that lrfr cannot adjust.")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    shown = "[" + ", ".join(str(d) if d is not None else (p.dim_param or "?")
                            for d, p in zip(dims, tensor_type.shape.dim)) + "]"
    wanted = [None, 3, INPUT_SIZE, INPUT_SIZE]
    if not tensor_type.HasField("shape") or len(dims) != 4 or any(
            d is not None and w is not None and d != w for d, w in zip(dims, wanted)):
        shown = shown if tensor_type.HasField("shape") else "of unknown shape"
        raise LrfrError(f"{path}: the model's input is {shown}; the protocols feed aligned 112x112 RGB faces "
                        "(N, 3, 112, 112), as face recognizers take them. Use a 112x112 recognition model.")
    output_name = _pick_output(graph, path, output)

    nodes, why = graph_normalisation(graph, value.name)
    in_graph = [node_label(node) for node in nodes]
    graph_mean, graph_std = (0.0, 1.0) if nodes else (DEFAULT_MEAN, DEFAULT_STD)
    inferred_reason = f"inferred: {why}; fed {formula(graph_mean, graph_std)}"
    declared = _declared(model, path)
    if declared is not None:
        graph_mean, graph_std, declared_bgr = declared
        inferred_reason = "declared in the model's metadata (an lrfr export)"
        channels_bgr = declared_bgr if bgr is None else bgr
    else:
        channels_bgr = bool(bgr)
    for flag, given in (("--input-mean", mean), ("--input-std", std)):
        if given is not None and not math.isfinite(given):
            raise LrfrError(f"{flag} {given}: not a finite number.")
    if std == 0:
        raise LrfrError("--input-std 0: the model input would be (x - mean) / 0. Give the divisor, e.g. 127.5 or 1.")
    if mean is None and std is None:
        use_mean, use_std, inferred, reason = graph_mean, graph_std, True, inferred_reason
    else:
        use_mean = float(mean) if mean is not None else graph_mean
        use_std = float(std) if std is not None else graph_std
        inferred = False
        if mean is not None and std is not None:
            reason = f"given: --input-mean {use_mean:g} --input-std {use_std:g}"
            if nodes:
                reason += f" (the graph also normalises its own input: {', '.join(in_graph)})"
        else:
            flag, value_given = ("--input-mean", use_mean) if mean is not None else ("--input-std", use_std)
            other, value_kept = ("std", use_std) if mean is not None else ("mean", use_mean)
            reason = f"given: {flag} {value_given:g}; {other} {value_kept:g} kept from the graph ({inferred_reason})"
    skips = insightface_skips_normalisation(model)
    if_mean, if_std = (0.0, 1.0) if skips else (DEFAULT_MEAN, DEFAULT_STD)
    return Feeding(input_name=value.name, output_name=output_name,
                   batch=dims[0] if dims[0] is not None and dims[0] > 0 else None,
                   mean=float(use_mean), std=float(use_std), bgr=channels_bgr, inferred=inferred, reason=reason,
                   in_graph=in_graph, insightface_feeds_same=(use_mean, use_std) == (if_mean, if_std),
                   bgr_given=bgr is not None, insightface_mean=if_mean, insightface_std=if_std)


def _declared(model: onnx.ModelProto, path: str | pathlib.Path) -> tuple[float, float, bool] | None:
    """(mean, std, bgr) from an lrfr export's metadata, or None when the model carries none."""
    props = {p.key: p.value for p in model.metadata_props}
    if not any(key in props for key in FEEDING_METADATA):
        return None
    try:
        mean, std = float(props["lrfr.input_mean"]), float(props["lrfr.input_std"])
        order = props["lrfr.channel_order"].upper()
    except (KeyError, ValueError) as exc:
        raise LrfrError(f"{path}: its metadata declares lrfr feeding but {exc} is missing or not a number; the keys "
                        f"are {', '.join(FEEDING_METADATA)}. Give --input-mean and --input-std.") from None
    if order not in ("RGB", "BGR") or not math.isfinite(mean) or not math.isfinite(std) or std == 0:
        raise LrfrError(f"{path}: its metadata declares input mean {mean}, std {std}, channels {order!r}; expected "
                        "finite numbers, std not 0, RGB or BGR. Give --input-mean, --input-std and --bgr/--rgb.")
    return mean, std, order == "BGR"


def _pick_output(graph: onnx.GraphProto, path: str | pathlib.Path, output: str | None) -> str:
    names = [o.name for o in graph.output]
    listed = ", ".join(repr(n) for n in names) or "none"
    if output is not None:
        if output not in names:
            raise LrfrError(f"{path}: no output named {output!r}; the model's outputs are {listed}.")
        return output
    if len(names) != 1:
        raise LrfrError(f"{path}: the model has {len(names)} outputs ({listed}); name the embedding with "
                        "--output NAME.")
    return names[0]
