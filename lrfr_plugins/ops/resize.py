"""Down-sample to s x s and back: the single low-resolution simulation used by training and by protocols.

The founding study uses bilinear both ways without anti-aliasing (cv2 INTER_LINEAR); the literature mostly uses
anti-aliased bicubic. Both are parameters here so that every caller names its choice.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

Mode = Literal["bilinear", "bicubic", "area", "nearest"]
MODES: tuple[str, ...] = ("bilinear", "bicubic", "area", "nearest")


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=size, mode=mode)


def resize_down_up(images: torch.Tensor, sizes: int | Sequence[int] | torch.Tensor, *, down: str = "bilinear",
                   up: str = "bilinear", antialias: bool = False) -> torch.Tensor:
    """Degrade uint8 images (N, 3, H, W) to ``sizes`` (one for all, or one per image) and restore H x W.

    The low-resolution intermediate is rounded to uint8, as when a small image is stored, and so is the result.
    A size equal to the input size returns the image unchanged. ``antialias`` applies to the down step only.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    for mode in (down, up):
        if mode not in MODES:
            raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(MODES)}")
    n, _, height, width = images.shape
    per_image = torch.as_tensor(sizes).reshape(-1).to(torch.int64)
    if per_image.numel() == 1:
        per_image = per_image.expand(n)
    if per_image.numel() != n:
        raise ValueError(f"got {per_image.numel()} sizes for {n} images")
    if (per_image < 1).any():
        raise ValueError(f"sizes must be >= 1, got {per_image.min().item()}")
    out = images.clone()
    for size in per_image.unique().tolist():
        if size == height == width:
            continue
        idx = (per_image == size).nonzero().squeeze(1)
        small = _resize(images[idx].float(), (size, size), down, antialias).round().clamp(0, 255)
        big = _resize(small, (height, width), up, False)
        out[idx] = big.round().clamp(0, 255).to(torch.uint8)
    return out


def resize_to(images: torch.Tensor, size: tuple[int, int], *, mode: str = "bilinear",
              antialias: bool = True) -> torch.Tensor:
    """Resize a uint8 batch (N, C, H, W) to ``size`` (H, W), rounded back to uint8: used where data arrive at
    another size than the network's (image folders, packing); anti-aliased by default, as an image library does."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return _resize(images.float(), tuple(size), mode, antialias).round().clamp(0, 255).to(torch.uint8)
