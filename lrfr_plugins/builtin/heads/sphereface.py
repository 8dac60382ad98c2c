"""SphereFace-R: multiplicative angular margin on normalised features, target s*psi(theta_y).

psi(theta) = (-1)^k cos(m*theta) - 2k with k = floor(m*theta / pi) is the monotone continuation of cos(m*theta)
(opensphere's SphereFace-R; the margin is added under no_grad there, the "characteristic gradient detachment").
The founding study's head computed cos(0.35*theta), an inverted margin that makes the target easier: not this.

``anneal`` blends in plain cos(theta) as the original A-Softmax did, target (lambda*cos + psi) / (1 + lambda),
with lambda = max(lambda_min, base * (1 + gamma*iteration)^(-power)) and the Caffe constants (1000, 0.12, 1, 5);
the iteration counter is a buffer, advanced once per training forward, so it is saved with the checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from ...api import Head, param
from ...ops import margin_logits


@dataclasses.dataclass(frozen=True)
class SphereFaceParams:
    scale: float = param(30.0, "feature scale s (opensphere: 30; its MS1M config: 64)", gt=0)
    margin: float = param(1.7, "multiplicative angular margin m (SphereFace-R: 1.7; A-Softmax: 4)", gt=0)
    gradient: Literal["exact", "detached"] = param(
        "detached", "'detached' is SphereFace-R's gradient detachment (d logit/d cos = s); 'exact' differentiates psi")
    anneal: bool = param(False, "blend cos(theta) into the target with A-Softmax's decaying lambda")
    lambda_base: float = param(1000.0, "anneal: lambda at iteration 0", gt=0)
    lambda_gamma: float = param(0.12, "anneal: lambda = max(lambda_min, base*(1 + gamma*it)^-power)", ge=0)
    lambda_power: float = param(1.0, "anneal: decay power", ge=0)
    lambda_min: float = param(5.0, "anneal: final lambda", ge=0)


class SphereFace(Head):
    """SphereFace-R (Liu et al., TPAMI 2022): target s*psi(theta), psi the monotone cos(m*theta); optional annealing."""

    Params = SphereFaceParams

    def __init__(self, params: SphereFaceParams):
        super().__init__(params)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def current_lambda(self) -> float:
        p = self.params
        it = int(self.iteration.item())
        return max(p.lambda_min, p.lambda_base * (1.0 + p.lambda_gamma * it) ** (-p.lambda_power))

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        logits = margin_logits(cosine, labels, scale=p.scale, m1=p.margin, fallback="psi", gradient=p.gradient)
        if not p.anneal:
            return logits
        if self.training:
            self.iteration += 1  # Caffe increments before use
        lam = self.current_lambda()
        plain = cosine.float() * p.scale
        rows = torch.nonzero(labels.reshape(-1) != -1).squeeze(1)
        cols = labels.reshape(-1)[rows].long()
        blended = logits.clone()
        blended[rows, cols] = (lam * plain[rows, cols] + logits[rows, cols]) / (1.0 + lam)
        return blended
