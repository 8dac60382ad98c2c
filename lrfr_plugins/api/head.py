"""Margin heads: ``head(cosine, labels, quality=None)`` -> scaled logits ready for cross-entropy.

Class centres live in the classifier (Partial FC style), not in the head: ``cosine`` (N, C) is normalised
embeddings times normalised centres, clamped to [-1, 1]. A label of -1 means the row's class lives on another
rank; such rows are only scaled.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Head(torch.nn.Module):
    Params: ClassVar[type] = NoParams
    #: A head that needs a per-sample quality sets this; the host then computes it and passes it.
    needs_quality: ClassVar[bool] = False
    #: The quality estimator used when the recipe names none.
    default_quality: ClassVar[str | None] = None

    def __init__(self, params: Any):
        super().__init__()
        self.params = params

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor,
                quality: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_loss(self) -> torch.Tensor | None:
        """A regulariser the training loss adds (e.g. MagFace's g(a)); None for most heads."""
        return None
