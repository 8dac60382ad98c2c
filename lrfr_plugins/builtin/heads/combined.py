"""InsightFace's combined margin, done right: target s*(cos(m1*theta + m2) - m3) for any (m1, m2, m3).

arcface_torch's CombinedMarginLoss silently drops m2 when m3 > 0 (so (1, 0.3, 0.2) trains CosFace 0.2) and
raises for m1 != 1; this head computes the formula for every combination.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class CombinedParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    m1: float = param(1.0, "multiplicative angular margin (SphereFace-like when > 1)", gt=0)
    m2: float = param(0.5, "additive angular margin (ArcFace)", ge=0, lt=math.pi)
    m3: float = param(0.0, "additive cosine margin (CosFace)", ge=0, lt=2)
    fallback: Literal["psi", "th_mm", "none"] = param(
        "psi", "past m1*theta+m2 > pi: 'psi' SphereFace's monotone continuation (any m1), 'th_mm' InsightFace's "
        "textbook rule (m1 = 1 only), 'none' the raw cosine")
    gradient: Literal["exact", "detached"] = param(
        "exact", "'detached': margin added under no_grad (arcface_torch's pseudo-gradient)")

    def __post_init__(self) -> None:
        if self.fallback == "th_mm" and self.m1 != 1.0:
            raise ValueError(f"fallback 'th_mm' needs m1 = 1 (got m1 = {self.m1}); use fallback 'psi'")


class Combined(Head):
    """Combined margin cos(m1*theta + m2) - m3 (InsightFace), correct for every (m1, m2, m3)."""

    Params = CombinedParams

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        return margin_logits(cosine, labels, scale=p.scale, m1=p.m1, m2=p.m2, m3=p.m3, fallback=p.fallback,
                             gradient=p.gradient)
