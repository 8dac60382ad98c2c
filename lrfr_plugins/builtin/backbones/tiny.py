"""A small convolutional network for CPUs: the demo's and the tests' backbone.

Shaped like InsightFace's iresnet, scaled down to train in minutes on two cores: four stride-2 stages take
112 px to a 7x7 map (56, 28, 14, 7), optional residual blocks refine each stage, and the tail flattens the 7x7
map into a Linear layer followed by BN1d. Flattening (rather than global pooling) keeps where a cue sits in
the face, as the large models do.
"""

from __future__ import annotations

import dataclasses
import pathlib

import torch
from torch import nn

from ...api import Backbone, param
from .weights import load_strict


@dataclasses.dataclass(frozen=True)
class TinyParams:
    embedding_size: int = param(128, "embedding dimension D", ge=2)
    widths: list[int] = param([16, 32, 64, 128], "channels of the four stages, at 56, 28, 14 and 7 px")
    depth: int = param(0, "residual blocks after each stage's down-sampling convolution", ge=0)
    dropout: float = param(0.0, "dropout before the embedding layer", ge=0, lt=1)
    weights: pathlib.Path | None = param(None, "weights to start from: a run's checkpoint.pt or a backbone state dict "
                                               "of the same widths and depth (loaded strict, weights_only)")

    def __post_init__(self) -> None:
        if len(self.widths) != 4 or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must list 4 positive channel counts (56, 28, 14, 7 px), got {self.widths}")


def conv_bn_prelu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout)]


class Residual(nn.Module):
    """x + BN(conv(PReLU(BN(conv(x))))), the improved-residual shape of iresnet at a fixed resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn_prelu(channels, channels, 1),
                                  nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyNet(Backbone):
    """Small CNN (112 px in, four stride-2 stages to 7x7, flatten to D): trains in minutes on a CPU."""

    Params = TinyParams

    def __init__(self, params: TinyParams):
        super().__init__(params)
        layers: list[nn.Module] = []
        cin = 3
        for width in params.widths:
            layers += conv_bn_prelu(cin, width, 2)
            layers += [Residual(width) for _ in range(params.depth)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.tail = nn.Sequential(nn.Dropout(params.dropout), nn.Flatten(),
                                  nn.Linear(cin * 7 * 7, params.embedding_size), nn.BatchNorm1d(params.embedding_size))
        if params.weights is not None:
            load_strict(self, params.weights, "tiny")

    @property
    def embedding_size(self) -> int:
        return self.params.embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.features(x))
