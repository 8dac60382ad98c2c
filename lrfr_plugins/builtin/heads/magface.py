"""MagFace (Meng et al., CVPR 2021): ArcFace whose margin grows with the feature norm, plus a norm regulariser.

a = clamp(||f||, l_a, u_a) is the raw embedding's norm (the ``feature-norm`` quality, *not* detached: the
gradient reaches the backbone through both the margin and the regulariser). The margin is linear in a,
m(a) = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a); the target is s cos(theta + m(a)) (by default only where
cos(theta) > 0, MagFace's easy margin). The regulariser g(a) = a / u_a^2 + 1 / a pushes easy, high-quality
samples to larger norms; the head computes lambda_g * mean(g(a)) in each forward and hands it to the training
loss through ``extra_loss()`` (MagFace's loss_id + lambda_g * loss_g).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Literal

import torch

from ...api import Head, param
from ...errors import LrfrWarning
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class MagFaceParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    l_a: float = param(10.0, "lower bound of the feature norm a", gt=0)
    u_a: float = param(110.0, "upper bound of the feature norm a", gt=0)
    l_m: float = param(0.45, "margin at a = l_a (radians)", ge=0, lt=math.pi)
    u_m: float = param(0.8, "margin at a = u_a (radians)", ge=0, lt=math.pi)
    lambda_g: float = param(35.0, "weight of the regulariser g(a) = a/u_a^2 + 1/a (MagFace's run.sh: 35)", ge=0)
    easy_margin: bool = param(True, "apply the margin only where cos(theta) > 0 (MagFace's default)")
    fallback: Literal["th_mm", "psi", "none"] = param(
        "th_mm", "past theta + m > pi when easy_margin is off (see the arcface head)")

    def __post_init__(self) -> None:
        if self.l_a >= self.u_a:
            raise ValueError(f"l_a ({self.l_a}) must be below u_a ({self.u_a})")
        if self.l_m > self.u_m:
            raise ValueError(f"l_m ({self.l_m}) must not exceed u_m ({self.u_m})")
        bound = self.min_lambda_g()
        if self.lambda_g < bound:
            warnings.warn(f"magface: lambda_g = {self.lambda_g} is below s*k*u_a^2*l_a^2/(u_a^2 - l_a^2) = "
                          f"{bound:.2f}, so the paper's guarantee of a unique optimal norm does not hold", LrfrWarning,
                          stacklevel=2)

    def min_lambda_g(self) -> float:
        """The smallest lambda_g for which the MagFace paper proves a unique optimal norm (22.59 at defaults)."""
        k = (self.u_m - self.l_m) / (self.u_a - self.l_a)
        return self.scale * k * self.u_a ** 2 * self.l_a ** 2 / (self.u_a ** 2 - self.l_a ** 2)


class MagFace(Head):
    """Norm-dependent ArcFace margin and norm regulariser (MagFace, CVPR 2021)."""

    Params = MagFaceParams
    needs_quality = True
    default_quality = "feature-norm"
    #: l_a = 10, u_a = 110 are MagFace's bounds of the raw embedding norm; setting either recalibrates the head
    #: (another estimator also carries no gradient, so g(a) then trains nothing)
    calibrated_quality = "feature-norm"
    quality_reference_params = ("l_a", "u_a")

    def __init__(self, params: MagFaceParams):
        super().__init__(params)
        self._regulariser: torch.Tensor | None = None

    def margin(self, norms: torch.Tensor) -> torch.Tensor:
        p = self.params
        a = norms.float().clamp(p.l_a, p.u_a)
        return p.l_m + (p.u_m - p.l_m) / (p.u_a - p.l_a) * (a - p.l_a)

    def regulariser(self, norms: torch.Tensor) -> torch.Tensor:
        """mean g(a) over the batch (MagFace's loss_g), before the lambda_g weight."""
        p = self.params
        a = norms.float().clamp(p.l_a, p.u_a)
        return (a / p.u_a ** 2 + 1.0 / a).mean()

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        if quality is None:
            raise ValueError("head 'magface' needs quality (N,): the norm of each raw (un-normalised) embedding, with "
                             "its gradient, the 'feature-norm' quality estimator")
        if quality.numel() != cosine.shape[0]:
            raise ValueError(f"head 'magface' got {quality.numel()} qualities for {cosine.shape[0]} rows of cosines")
        p = self.params
        norms = quality.reshape(-1).to(cosine.device)
        self._regulariser = p.lambda_g * self.regulariser(norms)
        return margin_logits(cosine, labels, scale=p.scale, m2=self.margin(norms), easy_margin=p.easy_margin,
                             fallback=p.fallback)

    def extra_loss(self) -> torch.Tensor | None:
        """lambda_g * mean g(a) of the last forward; the trainer adds it to the cross-entropy."""
        return self._regulariser
