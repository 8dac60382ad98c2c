"""Octuplet loss (Knoche, Elkadeem, Hoermann, Rigoll, FG 2023, arXiv 2207.06726), batch-hard, differentiable.

``embeddings`` is ``(2B, D)``: rows ``0..B-1`` are the high-resolution (HR) images, rows ``B..2B-1`` **the same
images** down-sampled and restored (LR), in the same order; ``labels`` is ``(B,)``. Four batch-hard triplet terms
(REFERENCE §9.1):

======  =======  ========================
term    anchors  positives and negatives
======  =======  ========================
hh      HR       HR   (T_hhh)
hl      HR       LR   (T_hll)
lh      LR       HR   (T_lhh)
ll      LR       LR   (T_lll)
======  =======  ========================

Per anchor ``i`` and term: ``hp = max_j d_ij * pos_ij``, ``hn = min_j (d_ij + rowmax_i(d) * (1 - neg_ij))``,
``l = max(hp - hn + margin, 0)``; the loss is ``mean_i sum_t c_t * l_t(i)``. One pair of masks serves all four
blocks: positive = same label **and** ``i != j``, negative = different label, so the HR and LR copies of one image
are never a positive pair. An anchor with no other image of its identity in the batch has ``hp = 0``: batches need
at least two images per identity (a P x K sampler).

Metrics: ``euclidean`` (``d^2 = |a|^2 - 2 a.b + |b|^2`` clamped at 0, square root with a 1e-16 guard on exact zeros),
``euclidean_squared``, ``cosine`` (``1 - cos``). There is no normalisation for the euclidean metrics (as in the
reference): normalise the embeddings before the call if you want it.

Differences from the public PyTorch reference (``pt_octuplet_loss.py``), forward values identical (REFERENCE §12):
its ``torch.maximum(torch.tensor(distances), ...)`` detaches the distance matrix, so it cannot back-propagate with
the euclidean metrics; here the clamp is ``clamp_min(0)`` and every metric trains. The term weights are built on the
embeddings' device (the reference builds them on the CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Metric = Literal["euclidean", "euclidean_squared", "cosine"]
METRICS: tuple[str, ...] = ("euclidean", "euclidean_squared", "cosine")
TERMS: tuple[str, ...] = ("hh", "hl", "lh", "ll")


def pairwise_distances(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distances ``(len(x), len(y))`` between the rows of ``x`` and ``y``, differentiable for every metric."""
    if metric == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        yn = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - xn @ yn.T
    if metric not in ("euclidean", "euclidean_squared"):
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ y.T) + (y * y).sum(1).unsqueeze(0)
    d2 = d2.clamp_min(0.0)  # the reference's torch.maximum(torch.tensor(d), 0) detaches here
    if metric == "euclidean_squared":
        return d2
    zero = (d2 == 0.0).to(d2.dtype)
    # sqrt has an infinite derivative at 0: shift exact zeros, then zero them again (their gradient is then 0).
    return torch.sqrt(d2 + zero * 1e-16) * (1.0 - zero)


def batch_hard_triplet(distances: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                       margin: float) -> torch.Tensor:
    """Per-anchor ``max(hardest positive - hardest negative + margin, 0)`` for one ``(B, B)`` distance block."""
    pos, neg = positive.to(distances.dtype), negative.to(distances.dtype)
    hardest_positive = (distances * pos).max(dim=1).values
    row_max = distances.max(dim=1, keepdim=True).values
    hardest_negative = (distances + row_max * (1.0 - neg)).min(dim=1).values
    return (hardest_positive - hardest_negative + margin).clamp_min(0.0)


def octuplet_terms(embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.5,
                   metric: str = "euclidean") -> dict[str, torch.Tensor]:
    """The four per-anchor terms ``{"hh", "hl", "lh", "ll"}``, each ``(B,)``, unweighted."""
    if embeddings.ndim != 2 or embeddings.shape[0] % 2:
        raise ValueError(f"embeddings must be (2B, D): B HR rows then their B LR copies, got "
                         f"{tuple(embeddings.shape)}")
    b = embeddings.shape[0] // 2
    labels = torch.as_tensor(labels, device=embeddings.device).reshape(-1)
    if labels.shape[0] != b:
        raise ValueError(f"labels must have B = {b} entries (one per HR/LR pair), got {labels.shape[0]}")
    hr, lr = embeddings[:b], embeddings[b:]
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    positive = same & ~torch.eye(b, dtype=torch.bool, device=embeddings.device)
    negative = ~same
    blocks = {"hh": (hr, hr), "hl": (hr, lr), "lh": (lr, hr), "ll": (lr, lr)}
    return {name: batch_hard_triplet(pairwise_distances(a, c, metric), positive, negative, margin)
            for name, (a, c) in blocks.items()}


def octuplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, *, margin: float = 0.5,
                  metric: str = "euclidean", terms: Sequence[bool] = (True, True, True, True)) -> torch.Tensor:
    """``mean_i sum_t c_t * l_t(i)`` over the switched-on terms ``(hh, hl, lh, ll)`` (the reference's
    ``configuration``). See the module docstring for the layout of ``embeddings``."""
    if len(terms) != 4:
        raise ValueError(f"terms must be 4 switches (hh, hl, lh, ll), got {list(terms)}")
    if not any(terms):
        raise ValueError("at least one octuplet term must be switched on")
    per_anchor = octuplet_terms(embeddings, labels, margin=margin, metric=metric)
    total = sum(per_anchor[name] for name, on in zip(TERMS, terms) if on)
    return total.mean()


class OctupletLoss(nn.Module):
    """Module form of :func:`octuplet_loss`: ``loss(embeddings (2B, D), labels (B,))``."""

    def __init__(self, margin: float = 0.5, metric: str = "euclidean",
                 terms: Sequence[bool] = (True, True, True, True)):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if len(terms) != 4 or not any(terms):
            raise ValueError(f"terms must be 4 switches (hh, hl, lh, ll) with at least one on, got {list(terms)}")
        self.margin, self.metric, self.terms = float(margin), metric, tuple(bool(t) for t in terms)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return octuplet_loss(embeddings, labels, margin=self.margin, metric=self.metric, terms=self.terms)
