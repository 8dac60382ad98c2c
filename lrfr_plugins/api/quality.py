"""Quality estimators: uint8 images (N, 3, H, W), 0..255, as the network sees them -> quality (N,) float."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Quality:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
