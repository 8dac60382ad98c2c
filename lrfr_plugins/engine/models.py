"""Any face-recognition model as an :data:`~lrfr_plugins.api.Embedder`, so every protocol measures any model.

Accepted: a run directory written by ``lrfr run`` (its resolved recipe rebuilds the backbone, its checkpoint fills
it), a checkpoint inside such a directory, a bare state dict such as arcface_torch's ``backbone.pth`` (with the
architecture named), an ONNX recognition model, or an InsightFace model-pack folder (its recognition ``.onnx``).
Checkpoints load with ``weights_only=True``, and only files that start as a torch file does (a zip holding
``data.pkl``, or a pickle); anything else is named for what it is (empty, text, JSON, its first bytes). ONNX
models are fed as their graph says (:mod:`lrfr_plugins.onnx_model.feeding`): raw pixels when the input reaches a
constant Sub/Mul/... or a BatchNormalization before the first Conv, else RGB ``(x - 127.5) / 127.5``;
``input_mean``/``input_std``/``bgr`` override that, ``output`` picks the embedding of a model with several outputs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import LrfrError
from ..safe_yaml import load_yaml
from .embed import make_embedder

RECIPE_FILE = "recipe.resolved.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
INPUT_SIZE = 112
ACCEPTED = ("lrfr eval takes a run directory of 'lrfr run', a checkpoint.pt in one, a PyTorch state dict such as "
            "arcface_torch's backbone.pth (with --backbone NAME), an ONNX model or an InsightFace model-pack folder")
#: Keys under which a training file may wrap a backbone's state dict (arcface_torch, FaceX-Zoo, lrfr).
WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "backbone", "model")


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
               batch_size: int = 256, input_mean: float | None = None, input_std: float | None = None,
               bgr: bool | None = None, output: str | None = None) -> LoadedModel:
    """Turn ``path`` into an embedder of uint8 RGB (N, 3, 112, 112) images (see the module docstring)."""
    path = pathlib.Path(path)
    feeding = {"mean": input_mean, "std": input_std, "bgr": bgr, "output": output}
    if not path.exists():
        raise LrfrError(f"{path}: no such file or directory. Give a run directory, a checkpoint (.pt/.pth), an "
                        ".onnx model or an InsightFace model-pack folder.")
    if path.is_dir() and not (path / RECIPE_FILE).is_file():
        onnx_files = sorted(path.glob("*.onnx"))
        if onnx_files:
            return onnx_model(_recognition_model(path, onnx_files, output), batch_size=batch_size, **feeding)
        raise LrfrError(f"{path}: not a run directory (no {RECIPE_FILE}) and no .onnx model in it.")
    if not path.is_dir() and not path.is_file():
        raise LrfrError(f"{path}: not a regular file or folder. {ACCEPTED}.")
    if path.is_file() and backbone == "onnx":  # the file imported as a torch module
        return _imported_onnx(path, registry, resolve_device(device), batch_size, feeding)
    if path.is_file() and (path.suffix.lower() == ".onnx" or sniff_model_file(path) == "onnx"):
        return onnx_model(path, batch_size=batch_size, **feeding)
    given = [flag for flag, value in (("--input-mean", input_mean), ("--input-std", input_std),
                                      ("--bgr/--rgb", bgr), ("--output", output)) if value is not None]
    if given:
        raise LrfrError(f"{path}: {', '.join(given)} apply to ONNX models only; a run directory or checkpoint is "
                        "fed as it was trained (RGB, (x - 127.5) / 127.5). Drop the option(s) or give the .onnx.")
    if path.is_dir():
        return _from_run(path, path / CHECKPOINT_FILE, registry, resolve_device(device), batch_size)
    state = read_torch_file(path)
    if backbone is not None:
        return _from_state_dict(path, backbone, registry, resolve_device(device), batch_size, state)
    if _is_lrfr_checkpoint(state) and (path.parent / RECIPE_FILE).is_file():
        return _from_run(path.parent, path, registry, resolve_device(device), batch_size, state)
    raise LrfrError(_needs_architecture(path, state))


def sniff_model_file(path: pathlib.Path) -> str:
    """'torch-zip' (a zip with data.pkl), 'torch-pickle' (torch's legacy format), 'onnx', or an LrfrError saying
    what the file is instead: a text file, JSON or random bytes must not be called a state dict, nor reach an
    unpickler at all."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise LrfrError(f"{path}: cannot read it: {exc.strerror}.") from None
    unknown = f"{path}: not a model file lrfr knows"
    if not head:
        raise LrfrError(f"{unknown}: the file is empty (0 bytes). {ACCEPTED}.")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise LrfrError(f"{path}: a zip archive (as PyTorch files are) that is damaged or truncated ({exc}). "
                            "Copy or download it again.") from None
        if any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in names):
            raise LrfrError(f"{path}: a TorchScript archive (torch.jit.save), which lrfr does not run (it would "
                            "execute the archive's code). Save the weights with torch.save(model.state_dict(), ...) "
                            "and give that file with --backbone NAME, or export the model to ONNX.")
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "") if names else "nothing"
        raise LrfrError(f"{unknown}: a zip archive without a PyTorch file's data.pkl (it holds {shown}). "
                        f"{ACCEPTED}.")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocol 2-5: torch's legacy format
        return "torch-pickle"
    if head[0] == 0x08 and _is_onnx(path):  # protobuf field 1 (ir_version), as every ONNX model starts
        return "onnx"
    raise LrfrError(f"{unknown}: {_describe(path, head)}. {ACCEPTED}.")


def _is_onnx(path: pathlib.Path) -> bool:
    from ..onnx_model.feeding import load_onnx

    try:
        load_onnx(path, external_data=False)
    except LrfrError:
        return False
    return True


def _describe(path: pathlib.Path, head: bytes) -> str:
    """What an unknown file looks like: JSON, text (its start), or its first bytes in hex."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is still text
        cut = len(head) == 4096 and exc.start >= len(head) - 3
        text = head[:exc.start].decode("utf-8") if cut else None
    if text is not None and not re.search(r"[\x00-\x08\x0e-\x1f]", text):
        if text.lstrip()[:1] in ("{", "[") and path.stat().st_size <= 1 << 20:
            try:
                json.loads(path.read_text(encoding="utf-8"))
                return "it is a JSON file"
            except ValueError:
                pass
        first = text.strip().splitlines()[0] if text.strip() else text
        return f"it is text, starting {first[:40]!r}"
    return f"its first bytes are {head[:8].hex(' ')}, the start of neither a PyTorch file (zip or pickle) nor ONNX"


def read_torch_file(path: pathlib.Path) -> Any:
    """The file's contents with ``weights_only=True`` (tensors and plain containers; no pickled code runs), after
    :func:`sniff_model_file` has made sure it is a torch file; each failure named for what it is."""
    kind = sniff_model_file(path)
    if kind == "onnx":
        raise LrfrError(f"{path}: an ONNX model, not a PyTorch file. Give it as is (without --backbone), or with "
                        "--backbone onnx to measure it imported as a torch module.")
    try:
        # mmap: a zip file's tensors stay on disk until used (a backbone's weights loader may read the file again)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch-zip")
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError... for bad files
        text = str(exc).strip()
        if text.startswith("Weights only load failed"):
            found = re.search(r"GLOBAL (\S+)", text)
            detail = f" (such as {found[1]})" if found else ""
            raise LrfrError(f"{path}: a PyTorch file holding pickled Python objects{detail}, not only tensors; lrfr "
                            "loads tensors only (weights_only=True) and runs no pickled code. Save the weights with "
                            "torch.save(model.state_dict(), ...) and give that file.") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise LrfrError(f"{path}: a PyTorch file that cannot be read ({type(exc).__name__}: {first}); it may be "
                        "truncated or damaged.") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _is_lrfr_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and _is_state_dict(obj.get("backbone")) and "step" in obj


def _needs_architecture(path: pathlib.Path, state: Any) -> str:
    """The message for a torch file that does not say its architecture, by what it holds."""
    if _is_lrfr_checkpoint(state):
        return (f"{path}: an lrfr checkpoint (step {state.get('step')}) without its run directory: its architecture "
                f"is in the run's {RECIPE_FILE}. Give the run directory (or put its {RECIPE_FILE} beside the file), "
                "or name the architecture with --backbone NAME.")
    wrapped = isinstance(state, Mapping) and any(_is_state_dict(state.get(k)) for k in WRAPPER_KEYS)
    if _is_state_dict(state) or wrapped:
        return (f"{path}: a bare state dict does not say its architecture. Name it, e.g. --backbone iresnet50 (an "
                "arcface_torch backbone.pth), or give the run directory.")
    return _not_a_state_dict(path, state)


def _not_a_state_dict(path: pathlib.Path, state: Any) -> str:
    if isinstance(state, Mapping):
        keys = ", ".join(map(str, list(state)[:6])) or "none"
        what = f"a mapping without tensors of a model (top-level keys: {keys})"
    else:
        what = f"a {type(state).__name__}"
    return (f"{path}: a PyTorch file holding {what}, not a state dict (parameter names to tensors) or an lrfr "
            "checkpoint. Save the weights with torch.save(model.state_dict(), ...).")


def _imported_onnx(path: pathlib.Path, registry: Any, device: torch.device, batch_size: int,
                   feeding: dict[str, Any]) -> LoadedModel:
    """``--backbone onnx``: the file imported as the trainable torch backbone (what a recipe's ``backbone: onnx``
    fine-tunes), measured in torch: the numbers to compare with onnxruntime's before fine-tuning it."""
    params = {"path": str(path), "input_mean": feeding["mean"], "input_std": feeding["std"], "bgr": feeding["bgr"],
              "output": feeding["output"]}
    model = registry.create("backbone", "onnx", **params).to(device).eval()
    return LoadedModel(make_embedder(model, device, batch_size),
                       {"kind": "onnx-imported", "path": str(path), "backbone": "onnx",
                        "imported_as": model.imported_as, "feeding": model.feeding.as_dict()})


def _from_run(run_dir: pathlib.Path, checkpoint: pathlib.Path, registry: Any, device: torch.device,
              batch_size: int, state: Any = None) -> LoadedModel:
    try:
        recipe = load_yaml((run_dir / RECIPE_FILE).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LrfrError(f"{run_dir / RECIPE_FILE}: not a readable recipe ({getattr(exc, 'problem', None) or exc}). "
                        "Is this a run directory of 'lrfr run'?") from None
    if not isinstance(recipe, dict):
        raise LrfrError(f"{run_dir / RECIPE_FILE}: not a recipe mapping; is this a run directory of 'lrfr run'?")
    slot = recipe.get("backbone")
    if not isinstance(slot, dict) or "name" not in slot:
        raise LrfrError(f"{run_dir / RECIPE_FILE}: no 'backbone' section; is this a run directory of 'lrfr run'?")
    if state is None and not checkpoint.is_file():
        raise LrfrError(f"{run_dir}: a run directory without {CHECKPOINT_FILE}: the run stopped before its first "
                        "checkpoint (see its run.log) or is still training. Finish it with 'lrfr run --resume "
                        f"{run_dir}', or evaluate another run.")
    params = dict(slot.get("params") or {})
    if "weights" in params:
        params["weights"] = None  # the checkpoint replaces the starting weights; their file may be gone
    model = registry.create("backbone", slot["name"], **params)
    if state is None:
        state = read_torch_file(checkpoint)
    if not _is_lrfr_checkpoint(state):
        raise LrfrError(_not_a_state_dict(checkpoint, state) if not isinstance(state, Mapping) else
                        f"{checkpoint}: not a checkpoint of 'lrfr run' (no 'backbone' state dict and 'step').")
    model.load_state_dict(state["backbone"])
    model.to(device).eval()
    return LoadedModel(make_embedder(model, device, batch_size),
                       {"kind": "run", "path": str(run_dir), "backbone": slot["name"], "recipe": recipe.get("name"),
                        "epoch": state.get("epoch"), "step": state.get("step")})


def _from_state_dict(path: pathlib.Path, backbone: str, registry: Any, device: torch.device,
                     batch_size: int, state: Any) -> LoadedModel:
    """``state`` is the file, already read safely; a backbone with ``weights`` loads the file its own way (and
    judges its layout), any other gets the state dict."""
    takes_weights = "weights" in {f.name for f in dataclasses.fields(registry.get("backbone", backbone).params_cls)}
    if takes_weights:
        model = registry.create("backbone", backbone, weights=str(path))  # the backbone's own strict, named loading
    else:
        if not (_is_state_dict(state) or _is_state_dict(state.get("backbone") if isinstance(state, Mapping) else None)):
            raise LrfrError(_not_a_state_dict(path, state))
        model = registry.create("backbone", backbone)
        try:
            model.load_state_dict(state.get("backbone", state) if isinstance(state, dict) else state)
        except (RuntimeError, TypeError) as exc:
            raise LrfrError(f"{path}: does not fit backbone '{backbone}': {exc}") from None
    model.to(device).eval()
    return LoadedModel(make_embedder(model, device, batch_size),
                       {"kind": "state-dict", "path": str(path), "backbone": backbone})


def _recognition_model(folder: pathlib.Path, candidates: list[pathlib.Path], output: str | None = None) -> pathlib.Path:
    """The recognition model of a model pack: the .onnx with a (N, 3, 112, 112) input and one output (or ``output``).

    Files that are not ONNX or do not look like a recognizer (detectors, landmarks) are passed over, not fatal.
    """
    from ..onnx_model.feeding import load_onnx, real_inputs

    found = []
    for path in candidates:
        try:
            graph = load_onnx(path, external_data=False).graph
        except LrfrError:
            continue
        inputs = real_inputs(graph)
        if len(inputs) != 1:
            continue
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
        outputs = [o.name for o in graph.output]
        if len(dims) == 4 and dims[1:] == [3, INPUT_SIZE, INPUT_SIZE] and (
                len(outputs) == 1 or (output is not None and output in outputs)):
            found.append(path)
    if len(found) != 1:
        names = ", ".join(p.name for p in (found or candidates))
        what = "no" if not found else "several"
        raise LrfrError(f"{folder}: {what} recognition model ((N, 3, 112, 112) input, one output) among {names}. "
                        "Give the .onnx file itself.")
    return found[0]


def onnx_model(path: pathlib.Path, *, batch_size: int = 256, mean: float | None = None, std: float | None = None,
               bgr: bool | None = None, output: str | None = None) -> LoadedModel:
    """An ONNX recognition model through onnxruntime, fed as its graph (or the user) says; its output checked."""
    from ..onnx_model.feeding import formula, load_onnx, read_feeding
    from ..onnx_model.runtime import open_session, run_batches

    feeding = read_feeding(load_onnx(path), path, mean=mean, std=std, bgr=bgr, output=output)
    session = open_session(path)

    def embed(images: torch.Tensor) -> np.ndarray:
        out = run_batches(session, feeding, feeding.to_model_input(images), where=path, batch_size=batch_size)
        if out.shape[0] == 0:
            return np.zeros((0, 0), np.float32)
        fed = f"{'BGR' if feeding.bgr else 'RGB'}, {formula(feeding.mean, feeding.std)}"
        return _checked(_embeddings(out, images.shape[0], path, feeding.output_name).astype(np.float32), path, fed)

    return LoadedModel(embed, {"kind": "onnx", "path": str(path), "input_mean": feeding.mean,
                               "input_std": feeding.std, "output": feeding.output_name,
                               "providers": session.get_providers(), "feeding": feeding.as_dict()})


def _embeddings(out: np.ndarray, n: int, path: pathlib.Path, name: str) -> np.ndarray:
    """One (D,) embedding per image: (N, D) as is, (N, D, 1, 1) flattened, anything else refused by shape."""
    out = np.asarray(out)
    if out.ndim == 4 and out.shape[2:] == (1, 1):
        out = out.reshape(out.shape[0], -1)
    if out.ndim != 2 or out.shape[0] != n:
        raise LrfrError(f"{path}: output {name!r} has shape {tuple(out.shape)} for {n} images; a recognition model "
                        "gives one embedding per image, (N, D). If the model has another output that is the "
                        "embedding, pick it with --output NAME.")
    return out


def _checked(embeddings: np.ndarray, path: pathlib.Path, fed: str) -> np.ndarray:
    """Refuse NaN/inf or all-zero embeddings: they score as chance with no other sign that the feeding is wrong."""
    bad = ~np.isfinite(embeddings).all(axis=1)
    zero = ~bad & ~embeddings.any(axis=1)
    if bad.any() or zero.any():
        what = " and ".join(f"{kind} embeddings for {int(mask.sum())}" for kind, mask in
                            (("non-finite", bad), ("all-zero", zero)) if mask.any())
        raise LrfrError(f"model {path} gave {what} of {len(embeddings)} images (fed {fed}). Check its input "
                        "normalisation (--input-mean/--input-std, --bgr) and that --output names the embedding.")
    return embeddings
