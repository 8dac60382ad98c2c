"""InsightFace's iresnet (r18 to r200), named tensor for tensor like arcface_torch's, so its checkpoints load.

The low-resolution methods fine-tune a backbone that was already trained on millions of faces; the common
starting point is an arcface_torch ``backbone.pth``. So the module tree mirrors arcface_torch's IResNet exactly
(conv1/bn1/prelu stem, layer1..layer4 of IBasicBlocks, bn2 -> dropout -> fc -> features tail) and ``weights``
loads such a file with ``strict=True``: any missing, unexpected or mis-shaped tensor is an error that says
which architecture the file seems to be, never a silently half-loaded model.

Like arcface_torch: BN eps 1e-5 everywhere, the features BN1d's weight is frozen at 1, ``fp16`` autocasts the
body and runs ``fc`` in float32, and convolutions start from N(0, 0.1). Unlike it, each block's last BN starts
at weight 0, so an untrained block is the identity: with their init and fresh running statistics (mean 0, var 1)
eval-mode outputs grow with depth until they overflow (r50 ~1e26, r100 inf). Loaded weights replace all of it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ...api import Backbone, param
from ...errors import LrfrError

#: Blocks per stage (layer1..layer4), as in arcface_torch's iresnet18..iresnet200.
ARCHS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
WIDTHS = (64, 128, 256, 512)
EPS = 1e-5
#: Keys under which a training checkpoint may hold the backbone's state dict (arcface_torch's resume file uses
#: "state_dict_backbone").
WRAPPER_KEYS = ("state_dict_backbone", "state_dict", "backbone", "model")


@dataclasses.dataclass(frozen=True)
class IResNetParams:
    embedding_size: int = param(512, "embedding dimension D (arcface_torch's num_features)", ge=1)
    dropout: float = param(0.0, "dropout on the flattened 7x7 map, before fc", ge=0, lt=1)
    fp16: bool = param(False, "autocast the body (float16 on GPU, bfloat16 on CPU); fc stays float32")
    weights: pathlib.Path | None = param(None, "arcface_torch backbone.pth (a state dict) to load, strict")


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the (down-sampled) input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=EPS)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


def make_stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    """The first block halves the resolution and changes the width; the others keep both."""
    return nn.Sequential(IBasicBlock(cin, cout, 2), *(IBasicBlock(cout, cout, 1) for _ in range(blocks - 1)))


class IResNet(Backbone):
    """InsightFace iresnet; subclasses fix the depth (``arch``)."""

    Params = IResNetParams
    arch: ClassVar[str] = ""

    def __init__(self, params: IResNetParams):
        super().__init__(params)
        blocks = ARCHS[self.arch]
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], eps=EPS)
        self.prelu = nn.PReLU(WIDTHS[0])
        self.layer1 = make_stage(WIDTHS[0], WIDTHS[0], blocks[0])  # 56 px
        self.layer2 = make_stage(WIDTHS[0], WIDTHS[1], blocks[1])  # 28 px
        self.layer3 = make_stage(WIDTHS[1], WIDTHS[2], blocks[2])  # 14 px
        self.layer4 = make_stage(WIDTHS[2], WIDTHS[3], blocks[3])  # 7 px
        self.bn2 = nn.BatchNorm2d(WIDTHS[3], eps=EPS)
        self.dropout = nn.Dropout(params.dropout)
        self.fc = nn.Linear(WIDTHS[3] * 7 * 7, params.embedding_size)
        self.features = nn.BatchNorm1d(params.embedding_size, eps=EPS)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
            elif isinstance(module, IBasicBlock):
                nn.init.zeros_(module.bn3.weight)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False
        if params.weights is not None:
            load_weights(self, params.weights)

    @property
    def embedding_size(self) -> int:
        return self.params.embedding_size

    def body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.dropout(torch.flatten(self.bn2(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.fp16 or torch.onnx.is_in_onnx_export():
            return self.features(self.fc(self.body(x)))
        kind = x.device.type
        with torch.autocast(kind, dtype=torch.bfloat16 if kind == "cpu" else torch.float16):
            x = self.body(x)
        with torch.autocast(kind, enabled=False):  # fc in float32, even inside a caller's autocast
            return self.features(self.fc(x.float()))


class IResNet18(IResNet):
    """InsightFace iresnet18 (arcface_torch r18); loads its backbone.pth."""

    arch = "iresnet18"


class IResNet34(IResNet):
    """InsightFace iresnet34 (arcface_torch r34); loads its backbone.pth."""

    arch = "iresnet34"


class IResNet50(IResNet):
    """InsightFace iresnet50 (arcface_torch r50); loads its backbone.pth."""

    arch = "iresnet50"


class IResNet100(IResNet):
    """InsightFace iresnet100 (arcface_torch r100); loads its backbone.pth."""

    arch = "iresnet100"


class IResNet200(IResNet):
    """InsightFace iresnet200 (arcface_torch r200); loads its backbone.pth."""

    arch = "iresnet200"


# --- loading arcface_torch checkpoints ---------------------------------------------------------------------------

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
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
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


def load_weights(model: IResNet, path: pathlib.Path | str) -> None:
    """Load an arcface_torch backbone state dict into ``model``, strict; LrfrError naming the file otherwise."""
    path = pathlib.Path(path).expanduser()
    who = f"backbone '{model.arch}'"
    state = read_state_dict(path, who)
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
        arch = guess_arch(state)
        if arch is not None and arch != model.arch:
            lines.append(f"  Its blocks per stage are {list(ARCHS[arch])}: is this an {arch} checkpoint? "
                         f"Use backbone '{arch}'.")
        elif arch is None and not any(k.startswith("layer") for k in state):
            lines.append("  It has no layer1..layer4 tensors: is this an iresnet checkpoint at all?")
        fc = state.get("fc.weight")
        if fc is not None and fc.ndim == 2 and fc.shape[0] != model.embedding_size:
            lines.append(f"  Its fc gives {fc.shape[0]}-d embeddings: set embedding_size: {fc.shape[0]}.")
        raise LrfrError("\n".join(lines))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # pragma: no cover - the checks above catch what strict loading rejects
        raise LrfrError(f"{who}: cannot load weights file {path}: {exc}") from None
