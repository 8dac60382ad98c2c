"""ArcFace: the target logit is s*cos(theta_y + m), non-targets s*cos(theta_j)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class ArcFaceParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.5, "additive angular margin m (radians)", ge=0, lt=math.pi)
    easy_margin: bool = param(False, "apply the margin only where cos(theta) > 0 (MagFace's default)")
    fallback: Literal["th_mm", "psi", "none"] = param(
        "th_mm", "past theta+m > pi: 'th_mm' uses cos - m*sin m (InsightFace's textbook rule), 'psi' SphereFace's "
        "monotone continuation, 'none' the non-monotone cos(theta+m) as arcface_torch does")
    gradient: Literal["exact", "detached"] = param(
        "exact", "'detached' is arcface_torch's pseudo-gradient: the margin is added under no_grad, d logit/d cos = s")


class ArcFace(Head):
    """Additive angular margin (Deng et al., CVPR 2019) with the textbook th/mm fallback."""

    Params = ArcFaceParams

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        return margin_logits(cosine, labels, scale=p.scale, m2=p.margin, easy_margin=p.easy_margin,
                             fallback=p.fallback, gradient=p.gradient)
