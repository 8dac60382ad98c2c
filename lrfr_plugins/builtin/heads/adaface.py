"""AdaFace (Kim, Jain, Liu, CVPR 2022): the margin adapts to image quality, measured by the feature norm.

The norm n_i of each raw embedding (the ``feature-norm`` quality, detached here) is standardised with running
batch statistics, z_i = clip(h (n_i - mu) / (sigma + eps), -1, 1), and sets both an angular and an additive
margin on the target: s [cos(clip(theta + g_angle, eps, pi - eps)) - g_add] with g_angle = -m z_i and
g_add = m + m z_i. A low-quality image (z = -1) gets ArcFace(m), an average one CosFace(m), a high-quality one
cos(theta - m) - 2m. All cosines are clamped to [-1 + eps, 1 - eps], as in the reference ``head.py``.

mu and sigma are EMA buffers (initial 20 and 100, so early training is CosFace-like), updated *before* use, under
no_grad, in training and evaluation mode alike, with the unbiased std: exactly the reference. They are computed
over every row the head receives, so under Partial FC, where each rank sees the gathered global batch with
labels of other ranks' classes set to -1, they are global statistics. One deviation: a batch of one image leaves
sigma unchanged (its unbiased std is NaN, which would poison the buffer for good in the reference).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class AdaFaceParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.4, "margin m (radians for the angular part, cosine units for the additive part)", ge=0)
    h: float = param(0.333, "concentration of the standardised norm: z = clip(h (n - mu) / (sigma + eps), -1, 1); "
                            "0 turns AdaFace into CosFace(m)", ge=0)
    t_alpha: float = param(0.01, "EMA rate of the batch mean/std of the norms (training used 0.01; head.py's "
                                 "default 1.0 uses each batch's own statistics)", gt=0, le=1)
    eps: float = param(1e-3, "cosine clamp, angle clip and std guard", gt=0, lt=0.1)
    gradient: Literal["exact", "detached"] = param(
        "exact", "'exact': the true gradient (AdaFace head.py); 'detached': the margin added under no_grad, as "
                 "CVLface's Partial FC AdaFace does")


class AdaFace(Head):
    """Quality-adaptive margin from the standardised feature norm (AdaFace, CVPR 2022)."""

    Params = AdaFaceParams
    needs_quality = True
    default_quality = "feature-norm"
    calibrated_quality = "feature-norm"

    @classmethod
    def quality_mismatch(cls, name, params, explicit, quality, units):
        """The EMA mean and std adapt to any estimator's range, so there is no reference parameter to set; but the
        values are clamped to [0.001, 100] (the norms' range, fixed in the reference), so warn that larger ones
        would all look alike."""
        if units == cls.calibrated_quality:
            return None
        return (f"head {name} standardises the quality with running statistics (they adapt to {quality}), but "
                f"clamps it to [0.001, 100] first, the feature norm's range: {units} values above 100 all count "
                f"as 100. Harmless if they stay below 100 on your data; else use quality: "
                f"{{name: feature-norm}}.")

    def __init__(self, params: AdaFaceParams):
        super().__init__(params)
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    @torch.no_grad()
    def _update_statistics(self, norms: torch.Tensor) -> None:
        alpha = self.params.t_alpha
        self.batch_mean.mul_(1 - alpha).add_(alpha * norms.mean())
        if norms.numel() > 1:
            self.batch_std.mul_(1 - alpha).add_(alpha * norms.std())

    def standardised_norm(self, quality: torch.Tensor) -> torch.Tensor:
        """z (N,) in [-1, 1]; updates the EMA statistics first, exactly as the reference does."""
        p = self.params
        norms = quality.detach().float().reshape(-1).clamp(0.001, 100.0)
        self._update_statistics(norms)
        return (p.h * (norms - self.batch_mean) / (self.batch_std + p.eps)).clamp(-1.0, 1.0)

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        if quality is None:
            raise ValueError("head 'adaface' needs quality (N,): the norm of each raw (un-normalised) embedding, "
                             "the 'feature-norm' quality estimator")
        p = self.params
        if quality.numel() != cosine.shape[0]:
            raise ValueError(f"head 'adaface' got {quality.numel()} qualities for {cosine.shape[0]} rows of cosines")
        z = self.standardised_norm(quality.to(cosine.device))
        cosine = cosine.float().clamp(-1 + p.eps, 1 - p.eps)
        return margin_logits(cosine, labels, scale=p.scale, m2=-p.margin * z, m3=p.margin + p.margin * z,
                             fallback="clip", clip_eps=p.eps, gradient=p.gradient)
