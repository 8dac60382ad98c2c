"""Loading a backbone's weights from a state-dict file: strict, safe, and with a diagnosis when it does not fit.

Files load with ``torch.load(weights_only=True)`` (tensors and plain containers only: no pickled code runs). A
training checkpoint that wraps the state dict (arcface_torch's ``state_dict_backbone``, ``state_dict``, ``backbone``,
``model``) is unwrapped and a DDP ``module.`` prefix stripped. When the keys or shapes do not match, the error names
the file, a few missing / unexpected / mis-shaped keys, and which known architecture the file seems to hold
(iresnet depth, MobileFaceNet scale and blocks, FaceX-Zoo Resnet depth), so that the fix is one setting away.
A ``checkpoint.pt`` of ``lrfr run`` works too: its backbone sits under ``backbone``.
"""

from __future__ import annotations

import pathlib
import pickle
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ...errors import LrfrError

#: Blocks per stage (layer1..layer4), as in arcface_torch's iresnet18..iresnet200.
ARCHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
#: Keys under which a training checkpoint may hold the backbone's state dict (arcface_torch's resume file uses
#: "state_dict_backbone").
WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "backbone", "model")


def read_state_dict(path: pathlib.Path, who: str) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (tensors and plain containers only: ``weights_only=True`` runs no pickled code)."""
    if not path.is_file():
        raise LrfrError(f"{who}: weights file {path} does not exist (or is not a file). Point 'weights' at an "
                        "arcface_torch backbone.pth, or set it to null to start from random weights.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0].rstrip(".") if text else f"{type(exc).__name__} (empty or truncated?)"
        if text.startswith("Weights only load failed"):  # torch's advice to retry unsafely is not ours to give
            found = re.search(r"GLOBAL (\S+)", text)
            detail = f" (such as {found[1]})" if found else ""
            first = f"it holds pickled objects other than tensors{detail}, which were not run"
        raise LrfrError(f"{who}: cannot read weights file {path}: {first}. It must be a PyTorch state dict "
                        "(torch.save(model.state_dict(), ...)), such as arcface_torch's backbone.pth; files holding "
                        "other pickled objects are refused (loaded with weights_only=True).") from None
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):  # a wrapper
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        keys = f" (top-level keys: {', '.join(map(str, list(obj)[:6]))})" if isinstance(obj, Mapping) else ""
        raise LrfrError(f"{who}: weights file {path} holds a {type(obj).__name__}{keys}, not a state dict of "
                        f"tensors. Save the backbone with torch.save(backbone.state_dict(), path).")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def guess_arch(keys: Any) -> str | None:
    """The iresnet whose block counts match the ``layerN.M.`` keys, or None."""
    counts = [0, 0, 0, 0]
    for key in keys:
        match = re.match(r"layer([1-4])\.(\d+)\.", key)
        if match:
            stage, block = int(match[1]) - 1, int(match[2])
            counts[stage] = max(counts[stage], block + 1)
    return next((name for name, blocks in ARCHS.items() if tuple(counts) == blocks), None)


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")



def guess_mobilefacenet(state: Mapping[str, Any]) -> str | None:
    """'scale S, blocks [...]' for an arcface_torch MobileFaceNet state dict, or None."""
    stem = state.get("layers.0.layers.0.weight")
    if stem is None or "conv_sep.layers.0.weight" not in state or getattr(stem, "ndim", 0) != 4:
        return None
    counts = {}
    for stage, index in enumerate((1, 3, 5, 7)):
        found = [int(m[1]) for k in state if (m := re.match(rf"layers\.{index}\.layers\.(\d+)\.layers\.", k))]
        counts[stage] = max(found) + 1 if found else 1  # layers.1 without sub-blocks: the single ConvBlock
    return f"scale {stem.shape[0] // 64}, blocks {[counts[i] for i in range(4)]}"


def guess_facex(state: Mapping[str, Any]) -> str | None:
    """'depth N' (and the mode) of a FaceX-Zoo Resnet state dict, or None."""
    if "input_layer.0.weight" not in state:
        return None
    units = {int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    depth = {24: 50, 49: 100, 50: 152}.get(len(units))
    se = any(".res_layer.5.fc1." in k for k in state)
    return f"depth {depth if depth else f'? ({len(units)} units)'}, mode {'ir_se' if se else 'ir'}"


def describe_checkpoint(state: Mapping[str, Any]) -> str | None:
    """A line saying which known architecture ``state`` seems to hold, or None."""
    arch = guess_arch(state)
    if arch is not None:
        return f"an arcface_torch {arch} checkpoint (blocks per stage {list(ARCHS[arch])}): " \
               f"use backbone '{arch}'"
    mbf = guess_mobilefacenet(state)
    if mbf is not None:
        settings = mbf.replace(" ", ": ", 1).replace(", blocks ", " and blocks: ")
        return f"an arcface_torch MobileFaceNet checkpoint ({mbf}): use backbone 'mobilefacenet' with {settings}"
    facex = guess_facex(state)
    if facex is not None:
        depth = facex.split(",")[0].replace(" ", ": ")
        return f"a FaceX-Zoo Resnet checkpoint ({facex}): use backbone 'facex-ir' with {depth}"
    return None


def load_strict(model: nn.Module, path: pathlib.Path | str, who: str,
                prepare: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                hints: Callable[[dict[str, torch.Tensor]], list[str]] | None = None) -> None:
    """Load a state dict file into ``model`` strict; LrfrError naming the file, the mismatches and the file's arch.

    ``prepare`` may rewrite the keys read (e.g. strip a wrapper's prefix); ``hints`` adds model-specific lines.
    """
    path = pathlib.Path(path).expanduser()
    state = read_state_dict(path, who)
    if prepare is not None:
        state = prepare(state)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        lines = [f"{who}: weights file {path} does not match the model."]
        if missing:
            lines.append(f"  missing keys: {_few(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_few(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches: {_few(shapes, 3)}")
        seems = describe_checkpoint(state)
        lines.append(f"  The file seems to be {seems}." if seems else
                     "  It matches no known architecture (iresnet, mobilefacenet, FaceX-Zoo Resnet).")
        lines += [f"  {line}" for line in (hints(state) if hints else [])]
        raise LrfrError("\n".join(lines))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - the checks above catch what strict loading rejects
        raise LrfrError(f"{who}: cannot load weights file {path}: {exc}") from None
