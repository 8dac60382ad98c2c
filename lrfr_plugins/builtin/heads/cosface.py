"""CosFace: the target logit is s*(cos(theta_y) - m), non-targets s*cos(theta_j)."""

from __future__ import annotations

import dataclasses

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class CosFaceParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.4, "additive cosine margin m (arcface_torch: 0.4; the founding study: 0.35 with s=30)",
                          ge=0, lt=2)


class CosFace(Head):
    """Large margin cosine loss (Wang et al., CVPR 2018): subtract m from the target cosine."""

    Params = CosFaceParams

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        return margin_logits(cosine, labels, scale=self.params.scale, m3=self.params.margin, fallback="none")
