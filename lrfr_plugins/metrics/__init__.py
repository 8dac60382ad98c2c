"""Evaluation metrics for protocols (stable API for plugin authors): verification and identification.

Verification: pair scores, the InsightFace and founding-study 10-fold accuracies, ROC, TAR@FAR, AUC, and
:func:`thin_curve` to keep a ``ProtocolResult`` curve to a few hundred points. Identification: similarity
matrices, the rank of the true match, CMC and rank-k accuracy. Everything takes and returns NumPy arrays.
"""

from .identification import (
    cmc,
    curve_auc,
    open_set_curve,
    open_set_identification,
    open_set_scores,
    rank_k_accuracy,
    rank_of_true,
    similarity_matrix,
    subject_templates,
    tpir_at_fpir,
)
from .retrieval import average_precision
from .verification import (
    FoldResult,
    cosine_scores,
    insightface_10fold,
    lozhkina_10fold,
    roc_auc,
    roc_curve,
    tar_at_far,
    thin_curve,
)

__all__ = [
    "FoldResult",
    "cosine_scores",
    "insightface_10fold",
    "lozhkina_10fold",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "thin_curve",
    "cmc",
    "rank_k_accuracy",
    "rank_of_true",
    "similarity_matrix",
    "average_precision",
]
