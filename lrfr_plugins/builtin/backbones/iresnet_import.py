"""Recognise arcface_torch's iresnet in an ONNX graph and load its tensors into our ``iresnetXX``, named as theirs.

InsightFace's packs ship iresnets exported by arcface_torch's torch2onnx.py (buffalo_l's w600k_r50.onnx is an
iresnet50). Torch's exporter folds every BatchNorm that follows a Conv into that Conv (weight scaled, a bias added);
our module has bias-free convolutions each followed by a BN, so a folded pair is un-folded exactly: the conv takes
the folded weight and its BN identity statistics (running_mean 0, running_var 1 - eps, weight 1, bias = the folded
bias), so that BN(y) = y + bias. The result computes what the file computes and is our iresnet: its state dict is an
arcface_torch ``backbone.pth`` (``torch.save(module.state_dict(), ...)`` loads into ``iresnet50`` strict). An
un-folded BN keeps its identity statistics even where the others learn theirs: batch statistics would normalise away
the scale folded into the conv, and the original statistics are not in the file.

Recognition follows tensor connections, never node names or order: conv stem -> (BN) -> PRelu, four stages whose
block counts are those of :data:`.weights.ARCHS` (every stage opens with a stride-2 block with a
1x1 downsample), then BN -> Flatten -> Gemm (or MatMul + Add) -> (BN). Every node the output depends on must be one of
these (Identity/Dropout aside); anything else, a BN eps other than arcface_torch's 1e-5 or quantised weights, and the
graph is not taken for an iresnet (the caller then runs it op by op).
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ...onnx_model.feeding import real_inputs
from .iresnet import (
    EPS,
    WIDTHS,
    IResNet,
    IResNet18,
    IResNet34,
    IResNet50,
    IResNet100,
    IResNet200,
    IResNetParams,
)
from .weights import ARCHS

PASS = frozenset({"Identity", "Dropout"})
CLASSES = {cls.arch: cls for cls in (IResNet18, IResNet34, IResNet50, IResNet100, IResNet200)}


class NotIResNet(Exception):
    """Why the graph is not an arcface_torch iresnet (one line, for ``arch: iresnet`` errors)."""


def identity_variance(eps: float = EPS) -> float:
    """The running_var v for which float32 v + eps is exactly 1, so that an identity BN scales by exactly 1."""
    v = np.float32(1.0 - eps)
    while np.float32(v + np.float32(eps)) < 1.0:
        v = np.nextafter(v, np.float32(2.0))
    while np.float32(v + np.float32(eps)) > 1.0:
        v = np.nextafter(v, np.float32(0.0))
    return float(v)


def import_iresnet(model: onnx.ModelProto, output_name: str) -> tuple[IResNet, list[str]]:
    """Our iresnet holding the graph's tensors, and the names of the BNs it un-folded (identity statistics).

    Those BNs must keep their statistics: batch statistics would normalise away the scale the exporter folded into
    the conv, which cannot be recovered. :class:`NotIResNet` says why when the graph is something else.
    """
    matcher = _Matcher(model, output_name)
    state, arch, dim = matcher.match()
    net = CLASSES[arch](IResNetParams(embedding_size=dim))
    expected = net.state_dict()
    state = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).reshape(expected[k].shape)
             for k, v in state.items()}
    state.update({k: v for k, v in expected.items() if k.endswith("num_batches_tracked")})
    missing = sorted(set(expected) - set(state))
    if missing:  # pragma: no cover - the matcher fills every tensor of the structure it checked
        raise NotIResNet(f"tensors left unmapped: {', '.join(missing[:3])}")
    net.load_state_dict(state, strict=True)
    return net.eval(), matcher.unfolded


class _Matcher:
    def __init__(self, model: onnx.ModelProto, output_name: str):
        graph = model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for name in node.output:
                self.producer[name] = node
        inputs = real_inputs(graph)
        if len(inputs) != 1:
            raise NotIResNet(f"{len(inputs)} graph inputs")
        self.input_name, self.output_name = inputs[0].name, output_name
        self.nodes = list(graph.node)
        self.needed = self._needed(output_name)
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for node in graph.node:
            if id(node) in self.needed:
                for name in node.input:
                    self.consumers[name].append(node)
        self.used: set[int] = set()
        self.state: dict[str, np.ndarray] = {}
        self.unfolded: list[str] = []  # BNs set to identity statistics (folded away by the exporter, or absent)

    def _needed(self, output_name: str) -> set[int]:
        needed, stack = set(), [output_name]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or id(node) in needed:
                continue
            needed.add(id(node))
            stack.extend(n for n in node.input if n)
        return needed

    # --- tensors -------------------------------------------------------------------------------------------------

    def const(self, name: str, what: str) -> np.ndarray:
        """An initializer's values, through Identity copies, Constant nodes and the Unsqueeze/Reshape an export
        without constant folding puts on PRelu slopes (the caller checks or sets the shape)."""
        while name not in self.initializers:
            node = self.producer.get(name)
            if node is not None and node.op_type in ("Identity", "Unsqueeze", "Squeeze", "Reshape"):
                self.used.add(id(node))
                name = node.input[0]
            elif node is not None and node.op_type == "Constant":
                self.used.add(id(node))
                return numpy_helper.to_array(node.attribute[0].t).astype(np.float32)
            else:
                raise NotIResNet(f"{what} {name!r} is not a constant (quantised or computed weights)")
        array = numpy_helper.to_array(self.initializers[name])
        if not np.issubdtype(array.dtype, np.floating):
            raise NotIResNet(f"{what} {name!r} is {array.dtype}, not float")
        return array.astype(np.float32)

    def next(self, tensor: str, ops: tuple[str, ...], what: str) -> onnx.NodeProto:
        """The one node that reads ``tensor`` (Identity/Dropout skipped), which must be one of ``ops``."""
        found = self.readers(tensor)
        if len(found) != 1 or found[0].op_type not in ops:
            got = ", ".join(n.op_type for n in found) or "nothing"
            raise NotIResNet(f"{what}: expected {'/'.join(ops)} after {tensor!r}, found {got}")
        self.used.add(id(found[0]))
        return found[0]

    def readers(self, tensor: str) -> list[onnx.NodeProto]:
        out = []
        for node in self.consumers.get(tensor, []):
            if node.op_type in PASS and node.input[0] == tensor:
                self.used.add(id(node))
                out += self.readers(node.output[0])
            else:
                out.append(node)
        return out

    # --- layers --------------------------------------------------------------------------------------------------

    def conv(self, node: onnx.NodeProto, prefix: str, bn: str, cin: int, cout: int, kernel: int, stride: int
             ) -> str:
        """A bias-free conv (our ``prefix``) and the BN after it (``bn``), un-folded when the exporter folded it."""
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weight = self.const(node.input[1], f"{prefix} weight")
        pad = kernel // 2
        if weight.shape != (cout, cin, kernel, kernel) or list(attrs.get("strides", [1, 1])) != [stride, stride] \
                or list(attrs.get("pads", [0] * 4)) != [pad] * 4 or attrs.get("group", 1) != 1 \
                or list(attrs.get("dilations", [1, 1])) != [1, 1] or attrs.get("auto_pad", b"NOTSET") not in (
                    b"NOTSET", "NOTSET"):
            raise NotIResNet(f"{prefix}: expected a {kernel}x{kernel} conv {cin}->{cout} stride {stride} pad {pad}, "
                             f"found weight {list(weight.shape)} strides {list(attrs.get('strides', [1, 1]))}")
        bias = self.const(node.input[2], f"{prefix} bias") if len(node.input) > 2 and node.input[2] else None
        self.state[f"{prefix}.weight"] = weight
        out = node.output[0]
        readers = self.readers(out)
        if len(readers) == 1 and readers[0].op_type == "BatchNormalization":
            self.used.add(id(readers[0]))
            self.batch_norm(readers[0], bn, cout, shift=bias)
            return readers[0].output[0]
        self.identity_bn(bn, bias if bias is not None else np.zeros(cout, np.float32))
        return out

    def batch_norm(self, node: onnx.NodeProto, prefix: str, c: int, shift: np.ndarray | None = None) -> None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        eps = float(attrs.get("epsilon", 1e-5))
        if abs(eps - EPS) > 1e-9 or any(node.output[1:]):
            raise NotIResNet(f"{prefix}: BatchNormalization eps {eps:g} (arcface_torch's is {EPS:g})")
        values = [self.const(n, f"{prefix} {k}") for n, k in zip(node.input[1:5], ("scale", "bias", "mean", "var"))]
        if any(v.size != c for v in values):
            raise NotIResNet(f"{prefix}: BatchNormalization of {values[0].size} channels, expected {c}")
        scale, bias, mean, var = (v.reshape(-1) for v in values)
        if shift is not None:  # a conv bias before an explicit BN: BN(y + b) has running_mean - b
            mean = mean - shift
        self.state.update({f"{prefix}.weight": scale, f"{prefix}.bias": bias, f"{prefix}.running_mean": mean,
                           f"{prefix}.running_var": var})

    def identity_bn(self, prefix: str, bias: np.ndarray) -> None:
        self.unfolded.append(prefix)
        c = bias.size
        self.state.update({f"{prefix}.weight": np.ones(c, np.float32), f"{prefix}.bias": bias.reshape(-1),
                           f"{prefix}.running_mean": np.zeros(c, np.float32),
                           f"{prefix}.running_var": np.full(c, identity_variance(), np.float32)})

    def prelu(self, tensor: str, prefix: str, c: int) -> str:
        node = self.next(tensor, ("PRelu",), prefix)
        slope = self.const(node.input[1], f"{prefix} slope")
        if slope.size != c:
            raise NotIResNet(f"{prefix}: PRelu of {slope.size} slopes, expected {c}")
        self.state[f"{prefix}.weight"] = slope.reshape(-1)
        return node.output[0]

    def block(self, tensor: str, prefix: str, cin: int, cout: int) -> str:
        """One IBasicBlock reading ``tensor``; stride 2 with a downsample when its readers include a Conv."""
        readers = self.readers(tensor)
        kinds = sorted(n.op_type for n in readers)
        if kinds not in (["Add", "BatchNormalization"], ["BatchNormalization", "Conv"]):
            raise NotIResNet(f"{prefix}: a block starts with BatchNormalization and a shortcut, found "
                             f"{', '.join(kinds) or 'nothing'} after {tensor!r}")
        bn1 = next(n for n in readers if n.op_type == "BatchNormalization")
        self.used.add(id(bn1))
        self.batch_norm(bn1, f"{prefix}.bn1", cin)
        down = next((n for n in readers if n.op_type == "Conv"), None)
        stride = 2 if down is not None else 1
        main = self.conv(self.next(bn1.output[0], ("Conv",), prefix), f"{prefix}.conv1", f"{prefix}.bn2", cin, cout,
                         3, 1)
        main = self.prelu(main, f"{prefix}.prelu", cout)
        main = self.conv(self.next(main, ("Conv",), prefix), f"{prefix}.conv2", f"{prefix}.bn3", cout, cout, 3,
                         stride)
        shortcut = tensor
        if down is not None:
            self.used.add(id(down))
            shortcut = self.conv(down, f"{prefix}.downsample.0", f"{prefix}.downsample.1", cin, cout, 1, 2)
        add = self.next(main, ("Add",), prefix)
        if sorted(add.input) != sorted([main, shortcut]):
            raise NotIResNet(f"{prefix}: the Add does not join the block with its shortcut")
        if shortcut == tensor and cin != cout:
            raise NotIResNet(f"{prefix}: {cin}->{cout} channels without a downsample")
        return add.output[0]

    def match(self) -> tuple[dict[str, np.ndarray], str, int]:
        t = self.conv(self.next(self.input_name, ("Conv",), "stem"), "conv1", "bn1", 3, WIDTHS[0], 3, 1)
        t = self.prelu(t, "prelu", WIDTHS[0])
        counts, cin = [], WIDTHS[0]
        for stage, width in enumerate(WIDTHS, start=1):
            if not any(n.op_type == "Conv" for n in self.readers(t)):
                raise NotIResNet(f"layer{stage}: does not open with a stride-2 block")
            t = self.block(t, f"layer{stage}.0", cin, width)
            n = 1
            while sorted(x.op_type for x in self.readers(t)) == ["Add", "BatchNormalization"]:
                t = self.block(t, f"layer{stage}.{n}", width, width)
                n += 1
            counts.append(n)
            cin = width
        arch = next((name for name, blocks in ARCHS.items() if list(blocks) == counts), None)
        if arch is None:
            raise NotIResNet(f"blocks per stage {counts} are no arcface_torch iresnet's "
                             f"({', '.join(f'{k} {list(v)}' for k, v in ARCHS.items())})")
        bn2 = self.next(t, ("BatchNormalization",), "tail")
        self.batch_norm(bn2, "bn2", WIDTHS[3])
        flat = self.next(bn2.output[0], ("Flatten", "Reshape"), "tail")
        if flat.op_type == "Flatten" and any(a.name == "axis" and a.i != 1 for a in flat.attribute):
            raise NotIResNet("tail: Flatten on an axis other than 1")
        if flat.op_type == "Reshape":
            shape = [int(v) for v in self.const(flat.input[1], "tail reshape").astype(np.int64).reshape(-1)]
            if len(shape) != 2 or shape[1] not in (-1, WIDTHS[3] * 49):
                raise NotIResNet(f"tail: Reshape to {shape}")
        t, dim = self.fc(flat.output[0])
        readers = self.readers(t)
        if len(readers) == 1 and readers[0].op_type == "BatchNormalization":
            self.used.add(id(readers[0]))
            self.batch_norm(readers[0], "features", dim)
            t = readers[0].output[0]
        else:
            self.identity_bn("features", np.zeros(dim, np.float32))
        if not self._reaches_output(t):
            raise NotIResNet(f"the embedding {t!r} is not the output {self.output_name!r}")
        left = [n for n in self._needed_nodes() if id(n) not in self.used and n.op_type not in PASS | {"Constant"}]
        if left:
            raise NotIResNet(f"nodes outside the iresnet structure: {', '.join(n.op_type for n in left[:4])}")
        return self.state, arch, dim

    def fc(self, tensor: str) -> tuple[str, int]:
        node = self.next(tensor, ("Gemm", "MatMul"), "fc")
        width = WIDTHS[3] * 49
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                raise NotIResNet("fc: Gemm with transA")
            weight = self.const(node.input[1], "fc weight") * np.float32(attrs.get("alpha", 1.0))
            weight = weight if attrs.get("transB", 0) else weight.T
            bias = self.const(node.input[2], "fc bias") * np.float32(attrs.get("beta", 1.0)) \
                if len(node.input) > 2 and node.input[2] else None
            out = node.output[0]
        else:
            weight = self.const(node.input[1], "fc weight").T
            add = self.readers(node.output[0])
            bias = None
            out = node.output[0]
            if len(add) == 1 and add[0].op_type == "Add":
                self.used.add(id(add[0]))
                other = next(n for n in add[0].input if n != node.output[0])
                bias, out = self.const(other, "fc bias"), add[0].output[0]
        if weight.ndim != 2 or weight.shape[1] != width:
            raise NotIResNet(f"fc: weight {list(weight.shape)}, expected (D, {width})")
        dim = weight.shape[0]
        bias = np.zeros(dim, np.float32) if bias is None else bias.reshape(-1)
        if bias.size != dim:
            raise NotIResNet(f"fc: bias of {bias.size}, expected {dim}")
        self.state["fc.weight"], self.state["fc.bias"] = np.ascontiguousarray(weight), bias
        return out, dim

    def _reaches_output(self, tensor: str) -> bool:
        while tensor != self.output_name:
            readers = [n for n in self.consumers.get(tensor, []) if n.op_type in PASS]
            if len(readers) != 1:
                return False
            tensor = readers[0].output[0]
        return True

    def _needed_nodes(self) -> list[Any]:
        return [node for node in self.nodes if id(node) in self.needed]
