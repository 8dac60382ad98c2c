"""FaceX-Zoo's ``Resnet`` in mode 'ir' (IR-50/100/152), named tensor for tensor so its checkpoints load.

The founding study trained FaceX-Zoo ``Resnet(50, drop_ratio=0.4, mode='ir', feat_dim=512, out_h=7, out_w=7)``.
It is not arcface_torch's iresnet50 under other names, so a checkpoint of one cannot load into the other:

- its block (``bottleneck_IR``, from TreB1eN's InsightFace_Pytorch) is BN -> conv3x3 -> PReLU -> conv3x3 (stride)
  -> BN: one BN fewer than iresnet's BN -> conv -> BN -> PReLU -> conv -> BN;
- where the width does not change (every block of the first stage, the later blocks of the others) the shortcut is
  ``MaxPool2d(1, stride)`` (plain subsampling, no tensors), so the first stage has no 1x1 downsample conv at all;
- the names are ``input_layer.{0,1,2}``, ``body.<n>.res_layer.{0..4}``, ``body.<n>.shortcut_layer.{0,1}``,
  ``output_layer.{0,3,4}`` (BN2d, Dropout, Flatten, Linear, BN1d), one flat ``body`` over all stages;
- its final BatchNorm1d is an ordinary trainable one (iresnet's ``features`` weight is frozen at 1), and the
  Linear keeps its bias; PyTorch's default initialisation throughout (FaceX-Zoo sets none).

IR-50 has 43,574,976 parameters (iresnet50: 43,590,848). FaceX-Zoo's forward ends in ``l2_norm``; this one
returns the raw embedding like every backbone here (the heads and protocols normalise: same direction).

``weights`` takes a state dict of this Resnet, or a FaceX-Zoo training checkpoint (``Epoch_17.pt``:
``{'state_dict': FaceModel.state_dict(), 'epoch', 'batch_id'}``), whose keys are ``backbone.*`` next to the
training head's ``head.*``: the backbone's tensors are taken and the head's ignored. Loading is strict.

The study fed BGR images as (x - 127.5) / 128; here, as for every backbone, input is RGB (x - 127.5) / 127.5.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from ...api import Backbone, param
from .weights import load_strict

#: Units per stage (widths 64, 128, 256, 512), as FaceX-Zoo's ``get_blocks``.
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}
WIDTHS = (64, 128, 256, 512)
#: Prefix of the backbone's tensors in a FaceX-Zoo training checkpoint (FaceModel.backbone next to .head).
CHECKPOINT_PREFIX = "backbone."


@dataclasses.dataclass(frozen=True)
class FaceXIRParams:
    depth: Literal[50, 100, 152] = param(50, "IR-50, IR-100 or IR-152 (FaceX-Zoo's num_layers)")
    drop_ratio: float = param(0.4, "dropout on the 512x7x7 map before the Linear (FaceX-Zoo's drop_ratio)", ge=0, lt=1)
    embedding_size: int = param(512, "embedding dimension D (FaceX-Zoo's feat_dim)", ge=1)
    weights: pathlib.Path | None = param(None, "FaceX-Zoo checkpoint (Epoch_N.pt) or Resnet state dict to load, strict")


class BottleneckIR(nn.Module):
    """FaceX-Zoo ``bottleneck_IR``: res_layer BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN, plus shortcut_layer."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut_layer: nn.Module
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
                                       nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class FaceXIR(Backbone):
    """FaceX-Zoo ``Resnet(depth, drop_ratio, mode='ir', feat_dim, 7, 7)``; loads its checkpoints."""

    Params = FaceXIRParams

    def __init__(self, params: FaceXIRParams):
        super().__init__(params)
        self.input_layer = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(WIDTHS[0]),
                                         nn.PReLU(WIDTHS[0]))
        # output_layer before body, as FaceX-Zoo registers them: same state-dict order
        self.output_layer = nn.Sequential(nn.BatchNorm2d(WIDTHS[3]), nn.Dropout(params.drop_ratio), nn.Flatten(),
                                          nn.Linear(WIDTHS[3] * 7 * 7, params.embedding_size),
                                          nn.BatchNorm1d(params.embedding_size))
        units: list[nn.Module] = []
        cin = WIDTHS[0]
        for width, n in zip(WIDTHS, DEPTHS[params.depth]):  # each stage's first unit halves the resolution
            units += [BottleneckIR(cin, width, 2)] + [BottleneckIR(width, width, 1) for _ in range(n - 1)]
            cin = width
        self.body = nn.Sequential(*units)
        if params.weights is not None:
            load_strict(self, params.weights, f"backbone FaceX-Zoo IR-{params.depth}", prepare=take_backbone,
                        hints=self._hints)

    @property
    def embedding_size(self) -> int:
        return self.params.embedding_size

    def _hints(self, state: Mapping[str, Any]) -> list[str]:
        fc = state.get("output_layer.3.weight")
        if fc is not None and fc.ndim == 2 and fc.shape[0] != self.embedding_size:
            return [f"Its output_layer gives {fc.shape[0]}-d embeddings: set embedding_size: {fc.shape[0]}."]
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.body(self.input_layer(x)))


def take_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` tensors, unprefixed, of a FaceX-Zoo FaceModel state dict; other dicts unchanged."""
    for prefix in (CHECKPOINT_PREFIX, "module." + CHECKPOINT_PREFIX):  # saved from model or model.module
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state
