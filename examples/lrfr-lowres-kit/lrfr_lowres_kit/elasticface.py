"""ElasticFace-Arc (Boutros et al., "ElasticFace: Elastic Margin Loss for Deep Face Recognition", CVPRW 2022):
ArcFace whose additive angular margin is drawn afresh for every sample.

Each training row i gets its own margin m_i ~ N(margin, sigma) on its target logit, s * cos(theta_y + m_i); other
logits stay s * cos(theta_j). The random margin relaxes ArcFace's single fixed decision boundary (the paper's
defaults: m = 0.5, sigma = 0.05, s = 64). Draws are clamped to [0, pi) (the paper does not clamp; at sigma = 0.05 a
draw outside is a 10-sigma event).

``sort`` assigns the drawn margins to the rows (the same set of draws, re-ordered):

* ``none``: as drawn (ElasticFace-Arc);
* ``cosine``: ElasticFace-Arc+, the largest margins to the hardest rows (lowest target cosine);
* ``quality``: an extension of this kit, not the paper's: the largest margins to the sharpest images (highest
  per-sample quality), the smallest to the poorest, in the spirit of AdaFace (do not push unrecognisable faces
  hardest). It reads only the **order** of the quality values, so any estimator's units work
  (``calibrated_quality`` is None); ``default_quality`` is this kit's ``tenengrad``.

The head declares ``needs_quality = True`` for ``sort: quality``; since that flag is a class attribute, the host
computes the estimator for the other two orders too, and they do not read it (Tenengrad is cheap and cacheable).
Sorting ranks the rows whose class is on this rank (labels != -1): on one device, the whole batch.

Randomness: ``stochastic = True``, so the host passes ``generator=`` (a ``torch.Generator`` on cosine's device,
seeded from the run seed, checkpointed) and every margin is drawn from it: a resumed run draws what an
uninterrupted one would. One margin is drawn per row of the batch, label -1 included, so the number of draws does
not depend on the labels. Called without a generator (a direct call in a test), the head draws from its own
generator seeded 0, never from torch's global one. Rows with label -1 are only scaled.

The logits come from :func:`lrfr_plugins.ops.margin_logits`, the host's margin formula (ArcFace is m2 = m, here a
per-row m2): past theta + m > pi, where cos() turns back up, the target is ArcFace's textbook cos(theta) - m sin(m).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch

from lrfr_plugins.api import Head, param
from lrfr_plugins.ops import margin_logits


@dataclasses.dataclass(frozen=True)
class ElasticArcParams:
    scale: float = param(64.0, "feature scale s", gt=0)
    margin: float = param(0.5, "mean m of the per-sample additive angular margin (radians)", ge=0, lt=math.pi)
    sigma: float = param(0.05, "standard deviation of the per-sample margin (radians); 0 is ArcFace", ge=0)
    sort: Literal["none", "cosine", "quality"] = param(
        "none", "which rows get the larger draws: none (ElasticFace-Arc), cosine (ElasticFace-Arc+: the hardest "
                "rows), quality (this kit: the sharpest images; reads only the order of the quality)")


def assign_sorted(draws: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """The values of ``draws`` re-ordered so that the row with the k-th smallest ``key`` gets the k-th smallest."""
    out = torch.empty_like(draws)
    out[torch.argsort(key, stable=True)] = torch.sort(draws).values
    return out


class ElasticFaceArc(Head):
    """ElasticFace-Arc (Boutros et al. 2022): ArcFace with a per-sample margin m_i ~ N(m, sigma); sorted variants."""

    Params = ElasticArcParams
    stochastic = True  # the host passes generator= (on cosine's device)
    needs_quality = True  # read by sort: quality only (a class attribute: it cannot depend on the parameters)
    default_quality = "tenengrad"
    calibrated_quality = None  # only the order of the values is read: any estimator's units fit

    def __init__(self, params: ElasticArcParams):
        super().__init__(params)
        self._fallback: torch.Generator | None = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._fallback is None or self._fallback.device != device:
            self._fallback = torch.Generator(device=device).manual_seed(0)
        return self._fallback

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        cosine = cosine.float()
        labels = labels.reshape(-1).long()
        if labels.shape[0] != cosine.shape[0]:
            raise ValueError(f"got {labels.shape[0]} labels for {cosine.shape[0]} rows of cosines")
        if p.sort == "quality" and quality is None:
            raise ValueError("elasticface-arc with sort: quality needs the per-sample quality; got None")
        generator = generator if generator is not None else self._generator(cosine.device)
        margins = torch.normal(p.margin, p.sigma, (cosine.shape[0],), generator=generator, device=cosine.device)
        margins = margins.clamp_(0.0, math.pi - 1e-3)
        if p.sort != "none":
            rows = torch.nonzero(labels != -1).squeeze(1)
            if p.sort == "cosine":  # lowest target cosine (hardest) -> largest margin
                key = -cosine.detach()[rows, labels[rows]]
            else:  # lowest quality -> smallest margin
                key = quality.detach().reshape(-1).to(margins.device)[rows]
            margins[rows] = assign_sorted(margins[rows], key)
        # The host's own margin formula (ArcFace = m2), per-row m2, th_mm fallback past pi, rows of -1 only scaled.
        return margin_logits(cosine, labels, scale=p.scale, m2=margins)
