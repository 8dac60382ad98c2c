"""Evaluation metrics; verification protocols import from here."""

from .verification import (
    FoldResult,
    cosine_scores,
    insightface_10fold,
    lozhkina_10fold,
    roc_auc,
    roc_curve,
    tar_at_far,
)

__all__ = [
    "FoldResult",
    "cosine_scores",
    "insightface_10fold",
    "lozhkina_10fold",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
]
