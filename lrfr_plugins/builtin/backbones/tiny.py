"""A small residual network for CPUs: the demo's and the tests' backbone.

Same shape as InsightFace's iresnet, scaled down: a stride-2 stem, improved-residual (IR) blocks that halve the
resolution down to 7x7, then BN2d -> dropout -> Linear(C*7*7, D) -> BN1d. Keeping the 7x7 flatten (not global
pooling) keeps where a cue sits in the face, as the large models do.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ...api import Backbone, param


@dataclasses.dataclass(frozen=True)
class TinyParams:
    embedding_size: int = param(128, "embedding dimension D", ge=2)
    widths: list[int] = param([16, 32, 64, 96], "channels of the stem (56 px) and of the stages at 28, 14 and 7 px")
    dropout: float = param(0.0, "dropout before the embedding layer", ge=0, lt=1)

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must list 4 positive channel counts (stem, 28, 14, 7 px), got {self.widths}")


class IRBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus a projected shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class TinyResNet(Backbone):
    """Small IR-ResNet (112 px in, 7x7 map, flatten to D): trains in minutes on a CPU."""

    Params = TinyParams

    def __init__(self, params: TinyParams):
        super().__init__(params)
        w = params.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.PReLU(w[0]))
        self.stages = nn.Sequential(IRBlock(w[0], w[1], 2), IRBlock(w[1], w[2], 2), IRBlock(w[2], w[3], 2))
        self.tail = nn.Sequential(nn.BatchNorm2d(w[3]), nn.Dropout(params.dropout), nn.Flatten(),
                                  nn.Linear(w[3] * 7 * 7, params.embedding_size), nn.BatchNorm1d(params.embedding_size))

    @property
    def embedding_size(self) -> int:
        return self.params.embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.stages(self.stem(x)))
