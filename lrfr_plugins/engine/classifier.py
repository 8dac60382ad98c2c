"""The plain single-process classifier: cosine = normalised embeddings x normalised centres.

The trainer uses :class:`~.partial_fc.PartialFC`, which shards the centres over ranks; this is the reference it is
tested against (with one process the two are bit-identical) and a minimal example of the head contract's input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormalizedClassifier(nn.Module):
    """(N, D) embeddings -> (N, C) cosines in [-1, 1]; centres initialised N(0, 0.01) as in arcface_torch."""

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))
        return cosine.clamp(-1.0, 1.0)
