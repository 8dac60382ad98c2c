"""Down-sample to s x s and back: the single low-resolution simulation used by training and by protocols.

The founding study uses bilinear both ways without anti-aliasing (cv2 INTER_LINEAR); the literature mostly uses
anti-aliased bicubic. Both are parameters here so that every caller names its choice.

Modes (``down`` / ``up``):

* ``bilinear``: torch ``interpolate``, half-pixel centres (``align_corners=False``). Without anti-aliasing this is
  cv2 ``INTER_LINEAR`` (a 2x2 neighbourhood per output pixel); with it, PIL ``BILINEAR``.
* ``bicubic``: torch's bicubic. **Its kernel depends on ``antialias``**: without it, Keys a = -0.75 with replicated
  borders (cv2 ``INTER_CUBIC``); with it, Keys a = -0.5 with PIL's filter (REFERENCE §8.3).
* ``bicubic-pil``: PIL's ``BICUBIC`` (= TF's half-pixel Keys a = -0.5 with out-of-image taps dropped and the weights
  renormalised) at any scale, computed by torch's anti-aliased kernel. It anti-aliases when shrinking, like PIL, so on
  the down step it requires ``antialias=True``; on the up step it is the a = -0.5 cubic that ``bicubic`` cannot give.
  In float it matches PIL's float (mode "F") resize to ~1e-4 grey levels. It does not match PIL's *uint8* resize
  within 1 grey level: PIL stores its horizontal pass as uint8 (rounded, clipped to 0..255) before the vertical pass,
  which clips bicubic overshoot at hard edges. Measured down+up, ours vs PIL uint8 (Pillow 13): a real face photo
  max 2, mean ~0.25; synthetic faces with saturated hard edges max 8-18, mean ~0.25; uniform noise max 2-4.
* ``area``, ``nearest``: torch's.

Measured parity of ``bilinear`` without anti-aliasing (the study's path): 0 grey levels against a float64 numpy
INTER_LINEAR reference; within 1 of cv2 per step (cv2 uses 11-bit fixed point), 1-2 for the whole down+up pipeline.
See tests/test_degradation.py.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

Mode = Literal["bilinear", "bicubic", "bicubic-pil", "area", "nearest"]
MODES: tuple[str, ...] = ("bilinear", "bicubic", "bicubic-pil", "area", "nearest")
Rounding = Literal["round", "truncate"]
ROUNDINGS: tuple[str, ...] = ("round", "truncate")


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool) -> torch.Tensor:
    if mode == "bicubic-pil":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=size, mode=mode)


def _to_uint8_values(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """Clamp to 0..255 and round (or truncate, as TF's ``saturate_cast`` does); still float."""
    x = x.clamp(0, 255)
    return x.round() if rounding == "round" else x.floor()  # clamped values are >= 0: floor == truncation


def check_modes(down: str, up: str, antialias: bool, rounding: str = "round") -> None:
    """Raise ValueError for an unknown mode or rounding, or for ``bicubic-pil`` down without anti-aliasing."""
    for mode in (down, up):
        if mode not in MODES:
            raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(MODES)}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
    if down == "bicubic-pil" and not antialias:
        raise ValueError("down 'bicubic-pil' always anti-aliases (as PIL does): set antialias to true, or use "
                         "down 'bicubic' without anti-aliasing (Keys a = -0.75, cv2 INTER_CUBIC)")


def resize_down_up(images: torch.Tensor, sizes: int | Sequence[int] | torch.Tensor, *, down: str = "bilinear",
                   up: str = "bilinear", antialias: bool = False, rounding: str = "round",
                   quantize_lr: bool = True) -> torch.Tensor:
    """Degrade uint8 images (N, 3, H, W) to ``sizes`` (one for all, or one per image) and restore H x W.

    The low-resolution intermediate is rounded to uint8, as when a small image is stored (``quantize_lr``; false
    keeps it float and unclamped, as the Octuplet authors' TF op does), and so is the result. ``rounding`` is
    ``round`` (to nearest) or ``truncate`` (clamp, then drop the fraction: TF ``saturate_cast``); it applies to both
    quantisations. A size >= both H and W returns the image unchanged (no up-sampling round trip). ``antialias``
    applies to the down step only. Runs on the images' device, one interpolate pair per distinct size.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    check_modes(down, up, antialias, rounding)
    n, _, height, width = images.shape
    per_image = torch.as_tensor(sizes).reshape(-1).to(device="cpu", dtype=torch.int64)
    if per_image.numel() == 1:
        per_image = per_image.expand(n)
    if per_image.numel() != n:
        raise ValueError(f"got {per_image.numel()} sizes for {n} images")
    if (per_image < 1).any():
        raise ValueError(f"sizes must be >= 1, got {per_image.min().item()}")
    out = images.clone()
    for size in per_image.unique().tolist():
        if size >= height and size >= width:
            continue
        idx = (per_image == size).nonzero().squeeze(1).to(images.device)
        small = _resize(images[idx].float(), (size, size), down, antialias)
        if quantize_lr:
            small = _to_uint8_values(small, rounding)
        big = _resize(small, (height, width), up, False)
        out[idx] = _to_uint8_values(big, rounding).to(torch.uint8)
    return out


def resize_to(images: torch.Tensor, size: tuple[int, int], *, mode: str = "bilinear",
              antialias: bool = True) -> torch.Tensor:
    """Resize a uint8 batch (N, C, H, W) to ``size`` (H, W), rounded back to uint8: used where data arrive at
    another size than the network's (image folders, packing); anti-aliased by default, as an image library does."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(MODES)}")
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return _to_uint8_values(_resize(images.float(), tuple(size), mode, antialias), "round").to(torch.uint8)


def pad_to_square(images: torch.Tensor, size: int = 112, *, centre: bool = False, mode: str = "bilinear",
                  antialias: bool = False) -> torch.Tensor:
    """The founding study's ``square_crop`` for non-square faces (QMUL-SurvFace, SCface crops): keep the aspect,
    resize the long side to ``size`` and the short one to ``int(short / long * size)`` (at least 1), and paste the
    result on a black ``size`` x ``size`` square at the top-left (or centred). uint8 (N, C, H, W) of one size."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    nh, nw = (size, max(1, int(w / h * size))) if h > w else (max(1, int(h / w * size)), size)
    out = torch.zeros((n, c, size, size), dtype=torch.uint8, device=images.device)
    top, left = ((size - nh) // 2, (size - nw) // 2) if centre else (0, 0)
    out[:, :, top:top + nh, left:left + nw] = resize_to(images, (nh, nw), mode=mode, antialias=antialias)
    return out
