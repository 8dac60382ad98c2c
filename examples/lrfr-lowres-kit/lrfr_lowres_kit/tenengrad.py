"""Tenengrad sharpness: the mean squared Sobel gradient magnitude of the grey image (Krotkov 1987; Pertuz et al.,
"Analysis of focus measure operators", Pattern Recognition 2013).

q = mean over the (H-2) x (W-2) valid pixels of Gx^2 + Gy^2, with Gx, Gy the 3x3 Sobel responses of the grey image
(no padding, so no border rule enters the value). A blurred or down-sampled-and-restored face has weak gradients and
a low q. ``output: rms`` returns sqrt(q), the root-mean-square gradient in grey levels per pixel, whose range is
closer to linear in sharpness.

Grey is cv2's ``COLOR_RGB2GRAY`` in 15-bit fixed point, ``(9798 R + 19235 G + 3735 B + 2**14) >> 15``. For uint8
images everything up to the final division is integer arithmetic (int32 gradients, int64 sums), so the value is
exact and bit-identical for an image and its horizontal mirror (Gx changes sign, Gy does not, the squares and their
set are the same): ``cacheable = True`` is true, and the host may reuse an undegraded image's value across epochs.
Float images (pixel values 0..255) take the same formula in float64, without the integer rounding of grey.

Runs on the images' device with slicing only (no conv2d, which has no integer kernels). ``lr_mask`` is not read.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from lrfr_plugins.api import Quality, param

GREY = (9798, 19235, 3735)  # cv2 RGB2GRAY weights / 2**15


@dataclasses.dataclass(frozen=True)
class TenengradParams:
    output: Literal["energy", "rms"] = param("energy", "energy: mean Gx^2 + Gy^2 (grey levels^2); rms: its square "
                                                        "root (grey levels per pixel)")


def grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, H, W): int32 for uint8 input (cv2's exact fixed point), float64 otherwise."""
    if images.dtype == torch.uint8:
        x = images.to(torch.int32)
        g = x[:, 0] * GREY[0] + x[:, 1] * GREY[1] + x[:, 2] * GREY[2]
        return (g + (1 << 14)) >> 15
    x = images.to(torch.float64)
    return (x[:, 0] * GREY[0] + x[:, 1] * GREY[1] + x[:, 2] * GREY[2]) / 2.0 ** 15


def sobel_energy(g: torch.Tensor) -> torch.Tensor:
    """Per-image sum of Gx^2 + Gy^2 over the valid (H-2) x (W-2) pixels of (N, H, W), int64 or float64."""
    dx = g[:, :, 2:] - g[:, :, :-2]  # [-1, 0, 1] along width
    gx = dx[:, :-2] + 2 * dx[:, 1:-1] + dx[:, 2:]  # [1, 2, 1] along height
    dy = g[:, 2:, :] - g[:, :-2, :]
    gy = dy[:, :, :-2] + 2 * dy[:, :, 1:-1] + dy[:, :, 2:]
    acc = torch.int64 if not g.is_floating_point() else torch.float64
    gx, gy = gx.to(acc), gy.to(acc)  # |G| <= 4 * 255: the squares fit int32, their sums need int64
    return (gx * gx + gy * gy).flatten(1).sum(1)


class Tenengrad(Quality):
    """Tenengrad sharpness: mean squared Sobel gradient magnitude of the grey image (or its square root)."""

    Params = TenengradParams
    cacheable = True  # pixels alone decide it, and the mirror image has exactly the same value

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"tenengrad expects RGB images (N, 3, H, W), got {got}")
        if images.shape[2] < 3 or images.shape[3] < 3:
            raise ValueError(f"tenengrad needs images of at least 3x3 px, got {tuple(images.shape[2:])}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"tenengrad expects uint8 or float pixel values 0..255, got {images.dtype}")
        count = (images.shape[2] - 2) * (images.shape[3] - 2)
        q = sobel_energy(grey(images)).to(torch.float64) / count
        if self.params.output == "rms":
            q = q.sqrt()
        return q.to(torch.float32)
