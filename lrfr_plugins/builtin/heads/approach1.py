"""The founding study's Approach 1: ArcFace with margin 0.35 for HR images and 0.5 for degraded ones."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class Approach1Params:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin_hr: float = param(0.35, "ArcFace margin for full-resolution images (quality 1)", ge=0, lt=math.pi)
    margin_lr: float = param(0.5, "ArcFace margin for degraded images (quality 0)", ge=0, lt=math.pi)
    fallback: Literal["th_mm", "psi", "none"] = param("th_mm", "past theta+m > pi (see the arcface head)")
    gradient: Literal["exact", "detached"] = param(
        "exact", "'detached' is the study's (and arcface_torch's) pseudo-gradient")


class Approach1(Head):
    """Approach 1 (Lozhkina, EPFL 2023): per-sample ArcFace margin from the resolution flag (HR 0.35, LR 0.5)."""

    Params = Approach1Params
    needs_quality = True
    default_quality = "resolution-flag"
    #: quality >= 0.5 reads as full resolution: the flag's 1 / 0. No parameter moves that threshold, so another
    #: estimator's units always warn (an estimator with the flag's meaning declares units = "resolution-flag").
    calibrated_quality = "resolution-flag"

    @classmethod
    def quality_mismatch(cls, name, params, explicit, quality, units):
        """Always a warning for other units: the 0.5 threshold is fixed."""
        if units == cls.calibrated_quality:
            return None
        return (f"head {name} reads quality >= 0.5 as full resolution (margin_hr={params['margin_hr']}) and below "
                f"as degraded (margin_lr={params['margin_lr']}): the resolution-flag quality's 1 and 0. With "
                f"{quality} the split follows its values against 0.5 instead, not the resolution. Use "
                f"quality: {{name: resolution-flag}}, or an estimator declaring units = 'resolution-flag'.")

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        if quality is None:
            raise ValueError("head 'approach1' needs quality (N,): 1 for full-resolution images, 0 for degraded ones "
                             "(the 'resolution-flag' quality estimator)")
        quality = quality.reshape(-1).to(cosine.device, torch.float32)
        margin = torch.where(quality >= 0.5, p.margin_hr, p.margin_lr)
        return margin_logits(cosine, labels, scale=p.scale, m2=margin, fallback=p.fallback, gradient=p.gradient)
