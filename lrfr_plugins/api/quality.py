"""Quality estimators: per-sample quality (N,) float, from the images as the network sees them or from embeddings.

Most estimators read the uint8 images (N, 3, H, W), 0..255, after degradation and before normalisation; the
host calls them before the forward pass. One that sets ``uses_embeddings = True`` (the feature norm of AdaFace
and MagFace) is called after the forward pass with ``embeddings=`` the backbone's raw output (N, D), which it may
keep differentiable. ``lr_mask`` (N,) bool marks the images a degradation made low-resolution
(:class:`~lrfr_plugins.api.DegradedBatch`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Quality:
    Params: ClassVar[type] = NoParams
    #: True: the host passes ``embeddings=`` (after the backbone) instead of calling before the forward pass.
    uses_embeddings: ClassVar[bool] = False
    #: True: an image's quality depends on its pixels alone and not on a horizontal flip, so the trainer may keep
    #: the value of an undegraded training image and reuse it in later epochs (only degraded images are computed).
    cacheable: ClassVar[bool] = False

    def __init__(self, params: Any):
        self.params = params

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None,
                 embeddings: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
