"""arcface_torch's MobileFaceNet (``mbf``, ``mbf_large``), named tensor for tensor so its backbone.pth files load.

The module tree mirrors arcface_torch's ``backbones/mobilefacenet.py`` (itself from cavaface): a ModuleList
``layers`` (stem ConvBlock, a grouped ConvBlock or Residual, then DepthWise/Residual pairs at 56, 28, 14 and 7 px),
``conv_sep`` (1x1 ConvBlock to 512 channels) and ``features`` (GDC: 7x7 depthwise LinearBlock, flatten, Linear
without bias, BatchNorm1d). Every ConvBlock/LinearBlock/DepthWise/Residual/GDC keeps its tensors under ``layers``
as theirs does. Their group counts are fixed numbers, not multiples of ``scale`` (the second stem conv has 64
groups, the DepthWise bottlenecks 128/256/512 channels): kept as is, since the shapes depend on them.

``weights`` loads such a file with ``strict=True``; a mismatch is an error naming the file and, where it can
tell, the architecture the file holds (mobilefacenet scale/blocks, an iresnet depth, a FaceX-Zoo IR net).

Like arcface_torch: BN eps 1e-5, Kaiming-normal (fan_out) convolutions and Linear, BN weight 1 / bias 0, and
``fp16`` autocasts ``layers`` and runs ``conv_sep`` and ``features`` in float32. Unlike it, there is no
``norm_output``: backbones return raw embeddings and the heads and protocols normalise.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...api import Backbone, param
from .weights import load_strict

EPS = 1e-5


def _check_blocks(blocks: Any) -> None:
    if len(blocks) != 4 or any(b < 1 for b in blocks):
        raise ValueError(f"blocks must be 4 counts >= 1, one per stage (56, 28, 14 and 7 px; arcface_torch's mbf "
                         f"has [1, 4, 6, 2], mbf_large [2, 8, 12, 4]), got {list(blocks)}")


@dataclasses.dataclass(frozen=True)
class MobileFaceNetParams:
    embedding_size: int = param(512, "embedding dimension D (arcface_torch's num_features)", ge=1)
    scale: int = param(2, "width multiplier: 64*scale and 128*scale channels (mbf 2, mbf_large 4)", ge=1)
    blocks: list[int] = param([1, 4, 6, 2], "blocks of the four stages (mbf [1, 4, 6, 2], mbf_large [2, 8, 12, 4])")
    fp16: bool = param(False, "autocast layers (float16 on GPU, bfloat16 on CPU); conv_sep and features stay float32")
    weights: pathlib.Path | None = param(None, "arcface_torch mbf backbone.pth (a state dict) to load, strict")

    def __post_init__(self) -> None:
        _check_blocks(self.blocks)


@dataclasses.dataclass(frozen=True)
class MobileFaceNetLargeParams:
    embedding_size: int = param(512, "embedding dimension D (arcface_torch's num_features)", ge=1)
    scale: int = param(4, "width multiplier: 64*scale and 128*scale channels (mbf 2, mbf_large 4)", ge=1)
    blocks: list[int] = param([2, 8, 12, 4], "blocks of the four stages (mbf [1, 4, 6, 2], mbf_large [2, 8, 12, 4])")
    fp16: bool = param(False, "autocast layers (float16 on GPU, bfloat16 on CPU); conv_sep and features stay float32")
    weights: pathlib.Path | None = param(None, "arcface_torch mbf_large backbone.pth (a state dict) to load, strict")

    def __post_init__(self) -> None:
        _check_blocks(self.blocks)


class ConvBlock(nn.Module):
    """conv (no bias) -> BN -> PReLU, under ``layers.0..2``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(cout, eps=EPS), nn.PReLU(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """conv (no bias) -> BN, under ``layers.0..1``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                                    nn.BatchNorm2d(cout, eps=EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """1x1 ConvBlock to ``groups`` channels, 3x3 depthwise ConvBlock (stride), 1x1 LinearBlock; + x if residual."""

    def __init__(self, cin: int, cout: int, groups: int, stride: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(cin, groups),
                                    ConvBlock(groups, groups, 3, stride, 1, groups=groups),
                                    LinearBlock(groups, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class Residual(nn.Module):
    """``num_block`` residual stride-1 DepthWise blocks, under ``layers``."""

    def __init__(self, c: int, num_block: int, groups: int):
        super().__init__()
        self.layers = nn.Sequential(*(DepthWise(c, c, groups, 1, residual=True) for _ in range(num_block)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise conv: 7x7 depthwise LinearBlock on 512 channels, flatten, Linear (no bias), BatchNorm1d."""

    def __init__(self, embedding_size: int):
        super().__init__()
        self.layers = nn.Sequential(LinearBlock(512, 512, 7, 1, 0, groups=512), nn.Flatten(),
                                    nn.Linear(512, embedding_size, bias=False), nn.BatchNorm1d(embedding_size, eps=EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(Backbone):
    """arcface_torch's MobileFaceNet (``mbf``: scale 2, blocks [1, 4, 6, 2]); loads its backbone.pth."""

    Params = MobileFaceNetParams
    #: What errors call it (arcface_torch's config name in brackets).
    label = "mobilefacenet"

    def __init__(self, params: MobileFaceNetParams):
        super().__init__(params)
        s, blocks = params.scale, params.blocks
        c1, c2 = 64 * s, 128 * s
        stem2: nn.Module
        if blocks[0] == 1:  # arcface_torch: a single grouped ConvBlock (64 groups) instead of a 1-block Residual
            stem2 = ConvBlock(c1, c1, 3, 1, 1, groups=64)
        else:
            stem2 = Residual(c1, blocks[0], groups=128)
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, 3, 2, 1),  # 56 px
            stem2,
            DepthWise(c1, c1, groups=128, stride=2),  # 28 px
            Residual(c1, blocks[1], groups=128),
            DepthWise(c1, c2, groups=256, stride=2),  # 14 px
            Residual(c2, blocks[2], groups=256),
            DepthWise(c2, c2, groups=512, stride=2),  # 7 px
            Residual(c2, blocks[3], groups=256),
        ])
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(params.embedding_size)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if params.weights is not None:
            load_strict(self, params.weights, f"backbone '{self.label}'", hints=self._hints)

    @property
    def embedding_size(self) -> int:
        return self.params.embedding_size

    def _hints(self, state: Mapping[str, Any]) -> list[str]:
        fc = state.get("features.layers.2.weight")
        if fc is not None and fc.ndim == 2 and fc.shape[0] != self.embedding_size:
            return [f"Its features give {fc.shape[0]}-d embeddings: set embedding_size: {fc.shape[0]}."]
        return []

    def body(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.params.fp16 or torch.onnx.is_in_onnx_export():
            return self.features(self.conv_sep(self.body(x)))
        kind = x.device.type
        with torch.autocast(kind, dtype=torch.bfloat16 if kind == "cpu" else torch.float16):
            x = self.body(x)
        with torch.autocast(kind, enabled=False):  # conv_sep and GDC in float32, even inside a caller's autocast
            return self.features(self.conv_sep(x.float()))


class MobileFaceNetLarge(MobileFaceNet):
    """arcface_torch's ``mbf_large`` (scale 4, blocks [2, 8, 12, 4]); loads its backbone.pth."""

    Params = MobileFaceNetLargeParams
    label = "mobilefacenet-large"


