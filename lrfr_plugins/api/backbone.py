"""Backbones map network input (N, 3, 112, 112), RGB scaled to [-1, 1], to un-normalised embeddings (N, D)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Backbone(torch.nn.Module):
    """Subclass and set ``embedding_size``; ``forward`` returns raw embeddings (heads and protocols normalise)."""

    Params: ClassVar[type] = NoParams
    #: InsightFace's ArcFaceONNX feeds (x - 127.5) / 127.5 on RGB: the input convention every backbone shares.
    input_size: ClassVar[int] = 112

    def __init__(self, params: Any):
        super().__init__()
        self.params = params

    @property
    def embedding_size(self) -> int:  # pragma: no cover - subclasses override
        raise NotImplementedError
