"""Degradations turn a uint8 batch into a (partly) low-resolution batch and say which images they degraded."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from ..params import NoParams


@dataclasses.dataclass
class DegradedBatch:
    images: torch.Tensor  #: uint8 (N, 3, H, W), same size as the input
    lr_mask: torch.Tensor  #: bool (N,), True where the image was degraded (Approach 1, octuplet need it)


class Degradation:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> DegradedBatch:  # pragma: no cover
        raise NotImplementedError
