"""ONNX export that ``insightface.model_zoo.get_model`` routes to ``ArcFaceONNX``.

InsightFace's contract: input (N, 3, 112, 112) with a dynamic batch axis and static spatial axes (square, >= 112,
divisible by 16), exactly one output, and no normalisation in the graph: ArcFaceONNX feeds RGB (x - 127.5) / 127.5
itself, and skips that only when the first graph nodes are named Sub*/Mul* (old MXNet models).
"""

from __future__ import annotations

import copy
import io
import pathlib
import warnings
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..errors import LrfrError
from ..ops.preprocess import FEEDING_METADATA, insightface_skips_normalisation

INPUT_NAME = "input.1"
OUTPUT_NAME = "embedding"


def export_onnx(backbone: torch.nn.Module, path: pathlib.Path, *, opset: int = 17, input_size: int = 112,
                check_parity: bool = True) -> dict[str, Any]:
    """Write ``path`` atomically and return what was checked (input/output shapes, onnxruntime parity)."""
    import onnx

    if input_size < 112 or input_size % 16:
        raise LrfrError(f"export: input size {input_size} is not loadable by InsightFace (needs >= 112 and a "
                        "multiple of 16).")
    model = copy.deepcopy(backbone).float().cpu().eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **FEEDING_METADATA})
    onnx.checker.check_model(proto)
    if len(proto.graph.output) != 1:
        raise LrfrError(f"export: the graph has {len(proto.graph.output)} outputs; InsightFace needs exactly one. "
                        "Make the backbone's forward return only the embedding.")
    if insightface_skips_normalisation(proto):
        raise LrfrError("export: the first graph nodes are named Sub*/Mul*, so InsightFace would skip its input "
                        "normalisation. Keep normalisation out of the backbone.")
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    report: dict[str, Any] = {"path": str(path), "opset": opset, "input": [None, 3, input_size, input_size],
                              "outputs": 1, "bytes": len(data)}
    if check_parity:
        report["parity_max_abs_diff"] = onnx_parity(model, path, input_size)
    return report


def onnx_parity(model: torch.nn.Module, path: pathlib.Path, input_size: int = 112) -> float | None:
    """Largest absolute difference between torch and onnxruntime on a fixed random batch (None without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 3, input_size, input_size)).astype(np.float32))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(got - expected).max())
