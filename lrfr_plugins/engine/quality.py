"""Calling a quality estimator the way the host does, so training and fine-tuning give a head the same values."""

from __future__ import annotations

from typing import Any

import torch


def estimate_quality(estimator: Any, images: torch.Tensor, lr_mask: torch.Tensor,
                     embeddings: torch.Tensor | None = None) -> torch.Tensor | None:
    """``estimator``'s (N,) values for uint8 ``images`` (``lr_mask``: the degraded rows); the embeddings go only to an
    estimator that ``uses_embeddings``. None without an estimator (a head that reads no quality)."""
    if estimator is None:
        return None
    if getattr(estimator, "uses_embeddings", False):
        return estimator(images, lr_mask=lr_mask, embeddings=embeddings)
    return estimator(images, lr_mask=lr_mask)
