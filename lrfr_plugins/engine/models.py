"""Any face-recognition model as an :data:`~lrfr_plugins.api.Embedder`, so every protocol measures any model.

Accepted: a run directory written by ``lrfr run`` (its resolved recipe rebuilds the backbone, its checkpoint fills
it), a checkpoint inside such a directory, a bare state dict such as arcface_torch's ``backbone.pth`` (with the
architecture named), an ONNX recognition model, or an InsightFace model-pack folder (its recognition ``.onnx``).
Checkpoints load with ``weights_only=True``. ONNX models are fed the way InsightFace's ``ArcFaceONNX`` feeds them:
RGB, ``(x - 127.5) / 127.5``, or raw pixels when the graph normalises its own input (first nodes Sub*/Mul*).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import LrfrError
from ..export.onnx import insightface_skips_normalisation
from .checkpoint import load_checkpoint
from .embed import make_embedder

RECIPE_FILE = "recipe.resolved.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
INPUT_SIZE = 112


@dataclasses.dataclass
class LoadedModel:
    embed: Any  # Embedder
    #: What was loaded, for reports: {"kind": "run" | "state-dict" | "onnx", "path": ..., ...}
    description: dict[str, Any]


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise LrfrError("--device cuda was requested but torch sees no CUDA device. Use --device auto or cpu.")
    return torch.device(choice)


def load_model(path: str | pathlib.Path, *, registry: Any, backbone: str | None = None, device: str = "auto",
               batch_size: int = 256) -> LoadedModel:
    """Turn ``path`` into an embedder of uint8 RGB (N, 3, 112, 112) images (see the module docstring)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise LrfrError(f"{path}: no such file or directory. Give a run directory, a checkpoint (.pt/.pth), an "
                        ".onnx model or an InsightFace model-pack folder.")
    if path.is_dir():
        if (path / RECIPE_FILE).is_file():
            return _from_run(path, path / CHECKPOINT_FILE, registry, resolve_device(device), batch_size)
        onnx_files = sorted(path.glob("*.onnx"))
        if onnx_files:
            return onnx_model(_recognition_model(path, onnx_files), batch_size=batch_size)
        raise LrfrError(f"{path}: not a run directory (no {RECIPE_FILE}) and no .onnx model in it.")
    if path.suffix.lower() == ".onnx":
        return onnx_model(path, batch_size=batch_size)
    if (path.parent / RECIPE_FILE).is_file() and backbone is None:
        return _from_run(path.parent, path, registry, resolve_device(device), batch_size)
    if backbone is None:
        raise LrfrError(f"{path}: a bare state dict does not say its architecture. Name it, e.g. "
                        "--backbone iresnet50 (an arcface_torch backbone.pth), or give the run directory.")
    return _from_state_dict(path, backbone, registry, resolve_device(device), batch_size)


def _from_run(run_dir: pathlib.Path, checkpoint: pathlib.Path, registry: Any, device: torch.device,
              batch_size: int) -> LoadedModel:
    recipe = yaml.safe_load((run_dir / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    slot = recipe.get("backbone")
    if not isinstance(slot, dict) or "name" not in slot:
        raise LrfrError(f"{run_dir / RECIPE_FILE}: no 'backbone' section; is this a run directory of 'lrfr run'?")
    params = dict(slot.get("params") or {})
    if "weights" in params:
        params["weights"] = None  # the checkpoint replaces the starting weights; their file may be gone
    model = registry.create("backbone", slot["name"], **params)
    state = load_checkpoint(checkpoint)
    if not isinstance(state, dict) or "backbone" not in state:
        raise LrfrError(f"{checkpoint}: not a checkpoint of 'lrfr run' (no 'backbone' entry).")
    model.load_state_dict(state["backbone"])
    model.to(device).eval()
    return LoadedModel(make_embedder(model, device, batch_size),
                       {"kind": "run", "path": str(run_dir), "backbone": slot["name"], "recipe": recipe.get("name"),
                        "epoch": state.get("epoch"), "step": state.get("step")})


def _from_state_dict(path: pathlib.Path, backbone: str, registry: Any, device: torch.device,
                     batch_size: int) -> LoadedModel:
    takes_weights = "weights" in {f.name for f in dataclasses.fields(registry.get("backbone", backbone).params_cls)}
    if takes_weights:
        model = registry.create("backbone", backbone, weights=str(path))  # the backbone's own strict, named loading
    else:
        model = registry.create("backbone", backbone)
        state = load_checkpoint(path)
        try:
            model.load_state_dict(state.get("backbone", state) if isinstance(state, dict) else state)
        except (RuntimeError, TypeError) as exc:
            raise LrfrError(f"{path}: does not fit backbone '{backbone}': {exc}") from None
    model.to(device).eval()
    return LoadedModel(make_embedder(model, device, batch_size),
                       {"kind": "state-dict", "path": str(path), "backbone": backbone})


def _recognition_model(folder: pathlib.Path, candidates: list[pathlib.Path]) -> pathlib.Path:
    """The recognition model of a model pack: the .onnx with a square 112 px input and one 2-D output."""
    import onnx

    found = []
    for path in candidates:
        graph = onnx.load(str(path), load_external_data=False).graph
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if len(dims) == 4 and dims[2:] == [INPUT_SIZE, INPUT_SIZE] and len(graph.output) == 1:
            found.append(path)
    if len(found) != 1:
        names = ", ".join(p.name for p in candidates)
        what = "no" if not found else "several"
        raise LrfrError(f"{folder}: {what} recognition model (112x112 input, one output) among {names}. "
                        "Give the .onnx file itself.")
    return found[0]


def onnx_model(path: pathlib.Path, *, batch_size: int = 256) -> LoadedModel:
    """An ONNX recognition model through onnxruntime, normalised exactly as InsightFace's ArcFaceONNX does."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise LrfrError("evaluating an ONNX model needs onnxruntime: pip install onnxruntime "
                        "(or pip install 'lrfr-plugins[onnxruntime]').") from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise LrfrError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}).") from None
    mean, std = (0.0, 1.0) if insightface_skips_normalisation(proto) else (127.5, 127.5)
    session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    first = session.get_inputs()[0]
    shape = list(first.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[2:] != [INPUT_SIZE, INPUT_SIZE]:
        raise LrfrError(f"{path}: the model's input is {shape}; the protocols feed aligned 112x112 RGB faces "
                        "(N, 3, 112, 112). Use a 112x112 recognition model.")
    fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    step = fixed_batch or batch_size

    def embed(images: torch.Tensor) -> np.ndarray:
        x = ((images.float() - mean) / std).numpy()
        out = []
        for i in range(0, x.shape[0], step):
            chunk = x[i:i + step]
            if fixed_batch and chunk.shape[0] < fixed_batch:  # pad a fixed-batch model's last chunk
                pad = np.zeros((fixed_batch - chunk.shape[0], *chunk.shape[1:]), np.float32)
                out.append(session.run(None, {first.name: np.concatenate([chunk, pad])})[0][:chunk.shape[0]])
            else:
                out.append(session.run(None, {first.name: chunk})[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    return LoadedModel(embed, {"kind": "onnx", "path": str(path), "input_mean": mean, "input_std": std,
                               "providers": session.get_providers()})
