"""The founding study's Approach 2: ArcFace whose per-sample margin comes from the Laplacian quality q.

- ``reciprocal``: m = 1/q exactly as the study (slides: HR mean q 15.721 -> m 0.064, LR 2.317 -> m 0.432).
  q is floored at 1/3 so that a flat image (q = 0) gets m = 3 rad instead of infinity.
- ``bounded``: the report's proposed fix (it gives no formula): m = m_min + (m_max - m_min) / (1 + (q/q_ref)^k),
  a bounded, monotone version of the reciprocal: m_max for a flat image, the midpoint at q = q_ref, m_min for
  sharp images. q_ref = 6.035 is the geometric mean of the study's HR and LR means, so with k = 2 those map to
  0.369 and 0.481 (k = 1 would be the reciprocal's own slope, 0.392 and 0.458).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits

Q_FLOOR = 1.0 / 3.0


@dataclasses.dataclass(frozen=True)
class Approach2Params:
    scale: float = param(64.0, "feature scale s", gt=0)
    mapping: Literal["reciprocal", "bounded"] = param(
        "reciprocal", "'reciprocal': m = 1/q (the study); 'bounded': m in [m_min, m_max], larger for lower quality")
    m_min: float = param(0.35, "bounded: margin of the sharpest images (radians)", ge=0, lt=math.pi)
    m_max: float = param(0.5, "bounded: margin of a flat (q = 0) image (radians)", ge=0, lt=math.pi)
    q_ref: float = param(6.035, "bounded: quality that gets the middle margin (geometric mean of the study's HR "
                                "and LR mean Laplacian, 15.721 and 2.317)", gt=0)
    sharpness: float = param(2.0, "bounded: exponent k of (q/q_ref); 1 follows the reciprocal's own slope", gt=0)
    fallback: Literal["th_mm", "psi", "none"] = param("th_mm", "past theta+m > pi (see the arcface head)")
    gradient: Literal["exact", "detached"] = param(
        "exact", "'detached' is the study's (and arcface_torch's) pseudo-gradient")

    def __post_init__(self) -> None:
        if self.m_min > self.m_max:
            raise ValueError(f"m_min ({self.m_min}) must not exceed m_max ({self.m_max})")


def approach2_margin(quality: torch.Tensor, p: Approach2Params) -> torch.Tensor:
    """Per-sample margin from the Laplacian quality (mean |L| in pixel units)."""
    q = quality.float()
    if p.mapping == "reciprocal":
        return 1.0 / q.clamp_min(Q_FLOOR)
    return p.m_min + (p.m_max - p.m_min) / (1.0 + (q.clamp_min(0) / p.q_ref) ** p.sharpness)


class Approach2(Head):
    """Approach 2 (Lozhkina, EPFL 2023): per-sample ArcFace margin from the Laplacian quality (1/q or bounded)."""

    Params = Approach2Params
    needs_quality = True
    default_quality = "laplacian"
    #: 1/q and q_ref = 6.035 assume mean |Laplacian| in pixel units (the study's HR 15.721, LR 2.317)
    calibrated_quality = "laplacian"
    quality_reference_params = ("q_ref",)

    @classmethod
    def quality_mismatch(cls, name, params, explicit, quality, units):
        """The reciprocal has no parameter to recalibrate (1/q reads q in Laplacian units whatever is set), so it
        always warns; the bounded mapping is recalibrated by setting q_ref."""
        if units == cls.calibrated_quality:
            return None
        if params.get("mapping") == "reciprocal":
            return (f"head {name}'s margin m = 1/q (mapping: reciprocal) is calibrated for the laplacian quality "
                    f"(mean |Laplacian| in pixels: the study's HR 15.7 -> m 0.064, LR 2.3 -> m 0.43); with "
                    f"{quality} m = 1/q follows {units} values instead (up to 3 rad where q < 1/3). Set "
                    f"head.params.mapping=bounded and head.params.q_ref to a typical {units} value of your data.")
        if "q_ref" in explicit:
            return None
        return (f"head {name}'s q_ref={params['q_ref']} is calibrated for the laplacian quality (mean |Laplacian| "
                f"in pixels, the study's HR 15.7, LR 2.3); with {quality} its margin stays at m_min="
                f"{params['m_min']} for values well above q_ref and at m_max={params['m_max']} well below. Set "
                f"head.params.q_ref to a typical {units} value of your data.")

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        if quality is None:
            raise ValueError("head 'approach2' needs quality (N,): the Laplacian quality mean|L| of each image as the "
                             "network sees it (the 'laplacian' quality estimator)")
        margin = approach2_margin(quality.reshape(-1).to(cosine.device), self.params)
        p = self.params
        return margin_logits(cosine, labels, scale=p.scale, m2=margin, fallback=p.fallback, gradient=p.gradient)
