"""Which images the degradations left untouched: the quality Approach 1 uses.

Units 'resolution-flag': 1.0 or 0.0 from the degradations' ``lr_mask`` (made low-resolution), not from the pixels;
a blur or JPEG that only sets ``changed`` leaves an image at 1.
"""

from __future__ import annotations

import torch

from ...api import Quality


class ResolutionFlag(Quality):
    """1.0 for images the degradations left at full resolution, 0.0 for degraded ones."""

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None) -> torch.Tensor:
        if lr_mask is None:  # no degradation ran: every image is full resolution
            return torch.ones(images.shape[0], device=images.device)
        return (~lr_mask.to(torch.bool)).float().to(images.device)
