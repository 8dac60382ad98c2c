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
from typing import ClassVar

import torch
from torch import nn

from ...api import Backbone, param
from .weights import ARCHS, load_strict

WIDTHS = (64, 128, 256, 512)
EPS = 1e-5


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

def load_weights(model: IResNet, path: pathlib.Path | str) -> None:
    """Load an arcface_torch backbone state dict into ``model``, strict; LrfrError naming the file otherwise."""

    def hints(state: dict[str, torch.Tensor]) -> list[str]:
        fc = state.get("fc.weight")
        if fc is not None and fc.ndim == 2 and fc.shape[0] != model.embedding_size:
            return [f"Its fc gives {fc.shape[0]}-d embeddings: set embedding_size: {fc.shape[0]}."]
        return []

    load_strict(model, path, f"backbone '{model.arch}'", hints=hints)
