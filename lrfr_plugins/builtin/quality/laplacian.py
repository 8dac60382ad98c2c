"""Laplacian sharpness: the founding study's image quality (mean |Laplacian|), plus the variance-of-Laplacian variant.

The Laplacian is cv2's ``ksize=1`` kernel [[0,1,0],[1,-4,1],[0,1,0]] with border REFLECT_101 (torch's
``F.pad(mode="reflect")``), per channel. ``mean_abs`` averages |L| over all H*W*3 values of the RGB image; ``var`` is
the population variance (ddof 0) of L on the grey image. Everything runs with torch ops on the batch's device.

Grey is cv2's ``COLOR_RGB2GRAY`` for uint8, reproduced bit for bit: cv2 (4.x/5.x) uses 15-bit fixed point,
``(9798 R + 19235 G + 3735 B + 2**14) >> 15``, not ``round(0.299 R + 0.587 G + 0.114 B)`` (which differs on
0.14% of colours). Float input (pixel units 0..255) goes through the same formula,
``floor((9798 R + 19235 G + 3735 B) / 2**15 + 0.5)``, so integer-valued floats give exactly the uint8 result;
non-integer floats are quantised to integer grey levels as if stored as uint8 grey.

Why the code looks like this (it runs on every training batch, so its cost is measured against a training step:
``eval/bench_laplacian.py``). On CPU the estimator is bound by memory traffic and by page faults on fresh
temporaries, not by arithmetic, so:

- uint8 input is computed in **integers**: the Laplacian in int16 (|L| <= 4 * 255 = 1020), the sums in int32/int64.
  That halves the bytes of float32, and the reductions are exact: ``mean_abs`` is the correctly rounded mean and
  ``var`` comes from exact sums, so both equal ``cv2.Laplacian(img, cv2.CV_64F)`` statistics up to float rounding.
- the REFLECT_101 padding is written by hand into one buffer of the working dtype, so the dtype conversion and the
  pad are one pass (``F.pad`` would be a second copy), and L is built with in-place adds (one temporary, not five).
- float input (e.g. non-integer pixel values) takes the same code in float32, with the same order of additions as
  ``up + down + left + right - 4 * centre``, so it is bit-identical to the straightforward float pad + slices.
eval/bench_laplacian.py times it against the float32 pad + slices it replaced, in the same run (eval/README.md).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from ...api import Quality, param

KERNEL = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))  # cv2.Laplacian ksize=1
_GREY_WEIGHTS = (9798.0, 19235.0, 3735.0)  # cv2 RGB2GRAY, 8-bit path: weights / 2**15
_GREY_SHIFT = 2.0 ** 15
_INT32_MAX = 2 ** 31 - 1


@dataclasses.dataclass(frozen=True)
class LaplacianParams:
    reduce: Literal["mean_abs", "var"] = param(
        "mean_abs", "mean_abs: mean |L| over RGB (the founding study); var: variance of L on the cv2 grey image")


def reflect_pad(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """1-px REFLECT_101 pad of (..., H, W) (== ``F.pad(x, (1, 1, 1, 1), mode="reflect")``), converting to ``dtype``
    in the same pass."""
    p = x.new_empty((*x.shape[:-2], x.shape[-2] + 2, x.shape[-1] + 2), dtype=dtype or x.dtype)
    p[..., 1:-1, 1:-1] = x
    p[..., 0, 1:-1] = p[..., 2, 1:-1]
    p[..., -1, 1:-1] = p[..., -3, 1:-1]
    p[..., 0] = p[..., 2]  # columns last: fills the corners as F.pad does
    p[..., -1] = p[..., -3]
    return p


def laplacian(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-channel Laplacian (``KERNEL``, border REFLECT_101) of (N, C, H, W), H and W >= 2, computed in ``dtype``
    (default: x's; integer dtypes must be signed and hold 8 * max|x|, e.g. int16 for uint8 pixels)."""
    p = reflect_pad(x, dtype)
    lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1]  # up + down + left + right - 4 centre, in place after the first add
    lap += p[..., 1:-1, :-2]
    lap += p[..., 1:-1, 2:]
    return lap.sub_(p[..., 1:-1, 1:-1], alpha=4)


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """cv2 ``COLOR_RGB2GRAY`` of (N, 3, H, W) pixel values as float (N, 1, H, W); exact for uint8 input."""
    x = images.to(torch.float32)  # weighted sums of uint8 stay below 2**24: exact in float32
    w = torch.tensor(_GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return torch.floor((x * w).sum(1, keepdim=True) / _GREY_SHIFT + 0.5)


def _grey_uint8(images: torch.Tensor) -> torch.Tensor:
    """``rgb_to_grey`` of uint8 images in int32 fixed point (the cv2 formula itself), (N, 1, H, W) int32."""
    r, g, b = images.unbind(1)
    grey = r.to(torch.int32).mul_(int(_GREY_WEIGHTS[0]))
    grey.add_(g, alpha=int(_GREY_WEIGHTS[1])).add_(b, alpha=int(_GREY_WEIGHTS[2]))
    return grey.add_(int(_GREY_SHIFT) // 2).bitwise_right_shift_(15).unsqueeze(1)


def _exact_sum(x: torch.Tensor, bound: int) -> torch.Tensor:
    """Per-sample sum of an integer (N, ..., W) batch whose values are at most ``bound`` in magnitude, exact.
    int32 accumulation is several times faster than int64 on CPU: use it for whole samples, or else for rows,
    wherever it cannot overflow."""
    if x[0].numel() * bound <= _INT32_MAX:
        return x.flatten(1).sum(1, dtype=torch.int32)
    if x.shape[-1] * bound <= _INT32_MAX:
        x = x.sum(-1, dtype=torch.int32)
    return x.flatten(1).sum(1, dtype=torch.int64)


class Laplacian(Quality):
    """Laplacian sharpness (cv2 ksize=1): mean |L| over RGB (the study's quality) or variance of L on grey."""

    Params = LaplacianParams
    cacheable = True  # mean |L| and var(L) see only the image, and a mirrored image has the same values

    @classmethod
    def units_for(cls, params: LaplacianParams) -> str:
        """mean |L| (pixel units, ~2 for a 16 px face restored to 112, ~16 at full resolution): 'laplacian', what
        Approach 2 is calibrated for; var(L) is in squared pixel units, another range: 'laplacian-var'."""
        return "laplacian" if params.reduce == "mean_abs" else "laplacian-var"

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"Laplacian quality expects a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Laplacian quality expects RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[2] < 2 or images.shape[3] < 2:
            raise ValueError(f"Laplacian quality needs images of at least 2x2 px, got {tuple(images.shape[2:])}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"Laplacian quality expects uint8 or float pixel values 0..255, got {images.dtype}")
        if images.dtype == torch.uint8:
            return self._exact(images)
        if self.params.reduce == "mean_abs":
            q = laplacian(images, torch.float32).abs_().mean(dim=(1, 2, 3))
        else:
            q = laplacian(rgb_to_grey(images)).flatten(1).var(dim=1, correction=0)
        return q.to(torch.float32)

    def _exact(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 path: integer Laplacian (|L| <= 1020 fits int16) and exact integer sums, rounded once at the end."""
        if self.params.reduce == "mean_abs":
            lap = laplacian(images, torch.int16).abs_()
            n = lap[0].numel()
            return (_exact_sum(lap, 1020).to(torch.float64) / n).to(torch.float32)
        lap = laplacian(_grey_uint8(images), torch.int16)
        n = lap[0].numel()
        s1 = _exact_sum(lap, 1020)
        lap32 = lap.to(torch.int32)
        s2 = _exact_sum(lap32.mul_(lap32), 1020 ** 2)
        mean = s1.to(torch.float64) / n
        return (s2.to(torch.float64) / n - mean * mean).to(torch.float32)
