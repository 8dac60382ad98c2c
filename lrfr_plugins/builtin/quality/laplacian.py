"""Laplacian sharpness: the founding study's image quality (mean |Laplacian|), plus the variance-of-Laplacian variant.

The Laplacian is cv2's ``ksize=1`` kernel [[0,1,0],[1,-4,1],[0,1,0]] with border REFLECT_101 (torch's
``F.pad(mode="reflect")``), per channel; it is computed as a sum of shifted slices, bit-identical to
``conv2d(groups=C)`` with that kernel and ~10x faster on CPU. ``mean_abs`` averages |L| over all H*W*3 values of the RGB image; ``var`` is the
population variance (ddof 0) of L on the grey image. Everything runs in float32 on the batch's device: for
uint8 input L is exact (integers) and the reductions agree with ``cv2.Laplacian(img, cv2.CV_64F)`` to ~5e-8
relative (measured on random, face and 16-px-degraded 112 px images; tests/test_quality_laplacian.py, 1e-6).

Grey is cv2's ``COLOR_RGB2GRAY`` for uint8, reproduced bit for bit: cv2 (4.x/5.x) uses 15-bit fixed point,
``(9798 R + 19235 G + 3735 B + 2**14) >> 15``, not ``round(0.299 R + 0.587 G + 0.114 B)`` (which differs on
0.14% of colours). Float input (pixel units 0..255) goes through the same formula,
``floor((9798 R + 19235 G + 3735 B) / 2**15 + 0.5)``, so integer-valued floats give exactly the uint8 result;
non-integer floats are quantised to integer grey levels as if stored as uint8 grey.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F

from ...api import Quality, param

KERNEL = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))  # cv2.Laplacian ksize=1
_GREY_WEIGHTS = (9798.0, 19235.0, 3735.0)  # cv2 RGB2GRAY, 8-bit path: weights / 2**15
_GREY_SHIFT = 2.0 ** 15


@dataclasses.dataclass(frozen=True)
class LaplacianParams:
    reduce: Literal["mean_abs", "var"] = param(
        "mean_abs", "mean_abs: mean |L| over RGB (the founding study); var: variance of L on the cv2 grey image")


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Laplacian (``KERNEL``, border REFLECT_101) of a float batch (N, C, H, W), H and W >= 2."""
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    centre = p[..., 1:-1, 1:-1]
    return p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * centre


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """cv2 ``COLOR_RGB2GRAY`` of (N, 3, H, W) pixel values as float (N, 1, H, W); exact for uint8 input."""
    x = images.to(torch.float32)  # weighted sums of uint8 stay below 2**24: exact in float32
    w = torch.tensor(_GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.floor((x * w).sum(1, keepdim=True) / _GREY_SHIFT + 0.5)


class Laplacian(Quality):
    """Laplacian sharpness (cv2 ksize=1): mean |L| over RGB (the study's quality) or variance of L on grey."""

    Params = LaplacianParams

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"Laplacian quality expects a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Laplacian quality expects RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[2] < 2 or images.shape[3] < 2:
            raise ValueError(f"Laplacian quality needs images of at least 2x2 px, got {tuple(images.shape[2:])}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"Laplacian quality expects uint8 or float pixel values 0..255, got {images.dtype}")
        if self.params.reduce == "mean_abs":
            lap = laplacian(images.to(torch.float32))
            q = lap.abs().mean(dim=(1, 2, 3))
        else:
            lap = laplacian(rgb_to_grey(images))
            q = lap.flatten(1).var(dim=1, correction=0)
        return q.to(torch.float32)
