"""An ONNX recognizer run in onnxruntime: one session opener and one batched runner, shared by ``lrfr eval`` and the
``onnx`` backbone's parity check, so that both feed a fixed-batch model the same way and fail with the same errors."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from ..errors import LrfrError
from .feeding import Feeding


def first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def open_session(path: str | pathlib.Path, providers: list[str] | None = None) -> Any:
    """An onnxruntime session (all available providers unless given); LrfrError naming the file on failure."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise LrfrError("running an ONNX model needs onnxruntime: pip install onnxruntime "
                        "(or pip install 'lrfr-plugins[onnxruntime]').") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: mxnet-era graphs list weights as inputs and ort warns per weight
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ort.get_available_providers())
    except Exception as exc:
        raise LrfrError(f"{path}: onnxruntime cannot load the model: {first_line(exc)}. A custom op or an opset "
                        f"newer than onnxruntime {ort.__version__} supports needs a newer onnxruntime "
                        "(pip install -U onnxruntime) or a re-export.") from None


def run_batches(session: Any, feeding: Feeding, x: np.ndarray, *, where: str | pathlib.Path,
                batch_size: int) -> np.ndarray:
    """The model's output for model input ``x`` (N, 3, 112, 112), ``batch_size`` images a call; a fixed-batch model
    gets chunks of its batch, the last one zero-padded and the padding's rows dropped. Outputs are (N, ...)."""
    step = feeding.batch or batch_size
    out = []
    for i in range(0, x.shape[0], step):
        chunk = x[i:i + step]
        n = chunk.shape[0]
        if feeding.batch and n < feeding.batch:
            chunk = np.concatenate([chunk, np.zeros((feeding.batch - n, *chunk.shape[1:]), np.float32)])
        try:
            got = np.asarray(session.run([feeding.output_name], {feeding.input_name: chunk})[0])
        except Exception as exc:
            raise LrfrError(f"{where}: onnxruntime failed on a batch of {chunk.shape[0]} images "
                            f"{list(chunk.shape)}: {first_line(exc)}") from None
        if got.ndim == 0 or got.shape[0] != chunk.shape[0]:
            raise LrfrError(f"{where}: output {feeding.output_name!r} has shape {tuple(got.shape)} for "
                            f"{chunk.shape[0]} images; a recognition model gives one embedding per image, (N, D). "
                            "If the model has another output that is the embedding, pick it with --output NAME.")
        out.append(got[:n])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
