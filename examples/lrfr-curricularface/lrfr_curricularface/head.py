"""CurricularFace: ArcFace on the target, and hard negatives re-weighted by an adaptive curriculum t."""

from __future__ import annotations

import dataclasses
import math

import torch

from lrfr_plugins.api import Head, param


@dataclasses.dataclass(frozen=True)
class CurricularParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.5, "additive angular margin m on the target", ge=0, lt=math.pi)
    momentum: float = param(0.01, "EMA rate of t, the running mean of target cosines", gt=0, le=1)


class CurricularFace(Head):
    """CurricularFace (Huang et al., CVPR 2020): hard negatives weighted by t + cos, t an EMA of target cosines."""

    Params = CurricularParams

    def __init__(self, params: CurricularParams):
        super().__init__(params)
        self.register_buffer("t", torch.zeros(()))

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        cosine = cosine.float()
        labels = labels.reshape(-1).long()
        rows = torch.nonzero(labels != -1).squeeze(1)
        target = cosine[rows, labels[rows]].clamp(-1 + 1e-7, 1 - 1e-7)
        sin = torch.sqrt(1 - target * target)
        cos_m = target * math.cos(p.margin) - sin * math.sin(p.margin)
        # Monotone continuation past theta + m > pi, as in the paper's code.
        final_target = torch.where(target > math.cos(math.pi - p.margin), cos_m,
                                   target - math.sin(math.pi - p.margin) * p.margin)
        if self.training and rows.numel():
            with torch.no_grad():
                self.t.mul_(1 - p.momentum).add_(p.momentum * target.mean())
        logits = cosine.clone()
        hard = logits[rows] > cos_m[:, None]
        sub = logits[rows]
        logits[rows] = torch.where(hard, sub * (self.t + sub), sub)
        logits[rows, labels[rows]] = final_target
        return logits * p.scale
