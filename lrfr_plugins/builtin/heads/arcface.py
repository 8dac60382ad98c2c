"""ArcFace: the target logit is s*cos(theta_y + m), non-targets s*cos(theta_j)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from ...api import Head, param


@dataclasses.dataclass(frozen=True)
class ArcFaceParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.5, "additive angular margin m (radians)", ge=0, lt=math.pi)
    easy_margin: bool = param(False, "apply the margin only where cos(theta) > 0 (MagFace's default)")
    fallback: Literal["th_mm", "none"] = param(
        "th_mm", "for theta+m > pi: 'th_mm' continues linearly (cos - m*sin m, keeps the target monotone); "
        "'none' keeps the non-monotone cos(theta+m) as arcface_torch does")
    gradient: Literal["exact", "detached"] = param(
        "exact", "'detached' is arcface_torch's pseudo-gradient: the margin is added under no_grad, d logit/d cos = s")


class ArcFace(Head):
    """Additive angular margin (Deng et al., CVPR 2019) with the textbook th/mm fallback."""

    Params = ArcFaceParams

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        return arcface_logits(cosine, labels, self.params.margin, scale=self.params.scale,
                              easy_margin=self.params.easy_margin, fallback=self.params.fallback,
                              gradient=self.params.gradient)


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, margin: float | torch.Tensor, *, scale: float,
                   easy_margin: bool = False, fallback: str = "th_mm", gradient: str = "exact") -> torch.Tensor:
    """Scaled logits with the angular margin on each row's target; ``margin`` is a scalar or per row (N,).

    Rows whose label is -1 (class on another rank) are only scaled. Computed in float32 even under autocast.
    """
    cosine = cosine.float()
    labels = labels.reshape(-1).long()
    rows = torch.nonzero(labels != -1).squeeze(1)
    m = torch.as_tensor(margin, dtype=cosine.dtype, device=cosine.device).expand(labels.shape[0])[rows]
    target = cosine[rows, labels[rows]]

    def margined(c: torch.Tensor) -> torch.Tensor:
        # Clamp away from +-1: sqrt(1 - c^2) has an infinite derivative there.
        c = c.clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1.0 - c * c)
        out = c * torch.cos(m) - sin * torch.sin(m)
        if easy_margin:
            return torch.where(c > 0, out, c)
        if fallback == "th_mm":
            th = torch.cos(math.pi - m)
            return torch.where(c > th, out, c - torch.sin(math.pi - m) * m)
        return out

    if gradient == "detached":
        with torch.no_grad():
            delta = margined(target) - target
        new_target = target + delta
    else:
        new_target = margined(target)
    logits = cosine.clone()
    logits[rows, labels[rows]] = new_target
    return logits * scale
