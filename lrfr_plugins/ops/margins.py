"""The one margin formula every angular head uses: target = cos(m1*theta + m2) - m3, non-targets unchanged.

ArcFace is (1, m, 0), CosFace (1, 0, m), SphereFace-R (m, 0, 0); Approaches 1 and 2 are ArcFace with a
per-row m2. Margins may be scalars or per-row tensors (N,). Rows whose label is -1 (class on another rank)
are only scaled.

Past m1*theta + m2 > pi, cos() turns back up and would reward moving away from the class centre. Fallbacks:

- ``th_mm`` (m1 = 1 only): InsightFace's textbook rule, target = cos(theta) - sin(m2)*m2 - m3 there;
- ``psi``: SphereFace's monotone continuation (-1)^k cos(m1*theta + m2) - 2k, k = floor((m1*theta + m2)/pi),
  continuous and decreasing for any m1, m2;
- ``clip``: AdaFace's rule, the angle m1*theta + m2 clamped to [eps, pi - eps] (``clip_eps``), which also keeps
  negative margins (AdaFace's high-quality rows) from pushing the angle below 0;
- ``none``: the raw cos(m1*theta + m2), as arcface_torch computes it.
"""

from __future__ import annotations

import math

import torch

MarginValue = float | torch.Tensor
FALLBACKS = ("th_mm", "psi", "clip", "none")


def _per_row(value: MarginValue, like: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.reshape(-1).expand(rows.numel()) if value.numel() == 1 else value.reshape(-1)[rows]


def margin_target(c: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, m3: torch.Tensor, *,
                  fallback: str = "th_mm", easy_margin: bool = False, clip_eps: float = 1e-3) -> torch.Tensor:
    """cos(m1*theta + m2) - m3 for target cosines ``c`` (float32), with the chosen fallback."""
    c = c.clamp(-1 + 1e-7, 1 - 1e-7)  # sqrt(1 - c^2) and acos have infinite slopes at +-1
    if bool((m1 == 1).all()):
        # cos(theta + m2) = c cos m2 - sin(theta) sin m2: better conditioned than cos(acos(c) + m2) near c = 1.
        sin = torch.sqrt(1.0 - c * c)
        raw = c * torch.cos(m2) - sin * torch.sin(m2)
    else:
        raw = torch.cos(m1 * torch.acos(c) + m2)
    if easy_margin:
        return torch.where(c > 0, raw - m3, c)
    if fallback == "th_mm":
        if not bool((m1 == 1).all()):
            raise ValueError("fallback 'th_mm' is defined for m1 = 1 only; use 'psi' for multiplicative margins")
        past = c <= torch.cos(math.pi - m2)
        return torch.where(past, c - torch.sin(math.pi - m2) * m2, raw) - m3
    if fallback == "psi":
        angle = m1 * torch.acos(c) + m2
        k = torch.floor(angle / math.pi).clamp_min(0)
        sign = 1.0 - 2.0 * torch.remainder(k, 2)
        return torch.where(angle > math.pi, sign * torch.cos(angle) - 2 * k, raw) - m3
    if fallback == "clip":
        return torch.cos((m1 * torch.acos(c) + m2).clamp(clip_eps, math.pi - clip_eps)) - m3
    if fallback == "none":
        return raw - m3
    raise ValueError(f"unknown fallback {fallback!r}; choose one of {', '.join(FALLBACKS)}")


def margin_logits(cosine: torch.Tensor, labels: torch.Tensor, *, scale: float, m1: MarginValue = 1.0,
                  m2: MarginValue = 0.0, m3: MarginValue = 0.0, fallback: str = "th_mm", easy_margin: bool = False,
                  gradient: str = "exact", clip_eps: float = 1e-3) -> torch.Tensor:
    """Scaled logits with the margin on each row's target; computed in float32 even under autocast.

    ``gradient="detached"`` is arcface_torch's pseudo-gradient: the margin is added under no_grad, so
    d logit / d cosine = scale everywhere.
    """
    cosine = cosine.float()
    labels = labels.reshape(-1).long()
    if labels.shape[0] != cosine.shape[0]:
        raise ValueError(f"got {labels.shape[0]} labels for {cosine.shape[0]} rows of cosines")
    rows = torch.nonzero(labels != -1).squeeze(1)
    target = cosine[rows, labels[rows]]
    m1_, m2_, m3_ = (_per_row(v, cosine, rows) for v in (m1, m2, m3))

    def margined(c: torch.Tensor) -> torch.Tensor:
        return margin_target(c, m1_, m2_, m3_, fallback=fallback, easy_margin=easy_margin, clip_eps=clip_eps)

    if gradient == "detached":
        with torch.no_grad():
            delta = margined(target) - target
        new_target = target + delta
    else:
        new_target = margined(target)
    logits = cosine.clone()
    logits[rows, labels[rows]] = new_target
    return logits * scale
