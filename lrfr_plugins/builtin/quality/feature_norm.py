"""The norm of each raw embedding: AdaFace's and MagFace's quality (a sharp, frontal face gets a larger norm).

It is computed from the backbone's output, so the host calls it after the forward pass. The norm keeps its
gradient: MagFace trains through it, AdaFace detaches it itself. Units 'feature-norm': the norm of the backbone's
raw output, which MagFace bounds to [10, 110] and AdaFace clamps to [0.001, 100].
"""

from __future__ import annotations

import torch

from ...api import Quality


class FeatureNorm(Quality):
    """||f_i||_2 of the raw (un-normalised) embedding, with gradient."""

    uses_embeddings = True

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None,
                 embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if embeddings is None:
            raise ValueError("quality 'feature-norm' needs the backbone's raw embeddings (N, D): the host passes "
                             "embeddings= to estimators with uses_embeddings = True")
        if embeddings.ndim != 2:
            raise ValueError(f"quality 'feature-norm' expects embeddings (N, D), got shape {tuple(embeddings.shape)}")
        return torch.linalg.vector_norm(embeddings.float(), dim=1)
