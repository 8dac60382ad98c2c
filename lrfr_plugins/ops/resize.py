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

``bilinear`` without anti-aliasing from a uint8 image to a uint8 image rounded to nearest (``resize_down_up`` with
``quantize_lr`` and ``rounding: round``: the study's ``lozhkina`` preset, the protocols' ``lozhkina`` and
``insightface``) is cv2 ``INTER_LINEAR`` **bit for bit**, each step: :func:`_bilinear_cv2` is cv2's 11-bit fixed-point
arithmetic in torch (batched, on the images' device, no cv2 needed). Tested against opencv 5.1 with 0 differing pixels
at 1..111 px, square and non-square (tests/test_resize_cv2_exact.py); torch's float bilinear differed from cv2 on
10-25 % of the pixels by one grey level. Other bilinear cases (a float LR image, truncation) have no cv2 counterpart
and keep torch's float bilinear, computed by :func:`_bilinear`, two small matrix products with torch's taps and weights
that read only the rows they need (identical to ``interpolate`` at sizes that divide the input, within 1 grey level
elsewhere, where float rounding of a product can tip an exact .5 tie). Both run a few images at a time
(``CHUNK``). ``resize_to`` keeps ``interpolate``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Mode = Literal["bilinear", "bicubic", "bicubic-pil", "area", "nearest"]
MODES: tuple[str, ...] = ("bilinear", "bicubic", "bicubic-pil", "area", "nearest")
Rounding = Literal["round", "truncate"]
ROUNDINGS: tuple[str, ...] = ("round", "truncate")
#: images per step of resize_down_up: 16 x 3 x 112 x 112 floats (2.4 MB) stay in cache between the steps
CHUNK = 16


@functools.lru_cache(maxsize=64)
def _linear_weights(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_out, k) float32 weights of torch's ``bilinear`` (align_corners=False, no anti-aliasing) along one axis, over
    the k source positions they read (returned too): torch's float32 source index max(scale * (i + 0.5) - 0.5, 0),
    scale = n_in / n_out, its two taps floor(src) and the next (clamped), weights 1 - frac and frac."""
    scale = torch.tensor(n_in, dtype=torch.float32) / n_out
    src = (scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp_(min=0)
    i0 = src.floor().to(torch.int64).clamp_(max=n_in - 1)
    frac = (src - i0).clamp_(0, 1)
    dense = torch.zeros(n_out, n_in)
    rows = torch.arange(n_out)
    dense[rows, i0] += 1 - frac
    dense[rows, (i0 + 1).clamp_(max=n_in - 1)] += frac
    used = (dense != 0).any(0).nonzero().squeeze(1)
    return dense[:, used].contiguous().to(device), used.to(device)


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``interpolate(x, size, "bilinear", align_corners=False, antialias=False)`` for a uint8 or float batch, as
    width then height matrix products over only the rows and columns that carry weight (2 per output when
    shrinking): the input is never converted to float whole, and the 112 x 112 result is written in one product."""
    wy, rows = _linear_weights(x.shape[-2], size[0], x.device)
    wx, cols = _linear_weights(x.shape[-1], size[1], x.device)
    if len(rows) < x.shape[-2]:
        x = x.index_select(-2, rows)
    if len(cols) < x.shape[-1]:
        x = x.index_select(-1, cols)
    return torch.matmul(wy, torch.matmul(x.float(), wx.T))


#: cv2's INTER_RESIZE_COEF_BITS: uint8 INTER_LINEAR weights are integers scaled by 2048
COEF_BITS = 11


@functools.lru_cache(maxsize=64)
def _cv2_axis(n_in: int, n_out: int, clamp_weights: bool) -> tuple[np.ndarray, ...]:
    """cv2 ``INTER_LINEAR`` taps and 11-bit weights along one axis, as ``cv::resize`` computes them for uint8:
    ``scale = 1 / (n_out / n_in)`` in double, source ``(float)((i + 0.5) * scale - 0.5)``, ``s = floor``, ``f`` the
    float32 remainder, weights ``round(2048 * (1.f - f))`` and ``round(2048 * f)`` (half to even, as cvRound).
    Horizontally (``clamp_weights``) a source left of 0 or at/after the last column becomes that column with weight
    (2048, 0); vertically the weights are kept and only the row indices are clipped to the image."""
    scale = 1.0 / (n_out / n_in)
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f)
    f = f - s  # float32, exact
    s = s.astype(np.int64)
    if clamp_weights:
        f[(s < 0) | (s >= n_in - 1)] = 0
        s = s.clip(0, n_in - 1)
    w0 = np.rint((np.float32(1) - f) * np.float32(1 << COEF_BITS)).astype(np.int64)  # exact product: power of two
    w1 = np.rint(f * np.float32(1 << COEF_BITS)).astype(np.int64)
    return s.clip(0, n_in - 1), (s + 1).clip(0, n_in - 1), w0, w1


@functools.lru_cache(maxsize=64)
def _cv2_plan(height: int, width: int, size: tuple[int, int], device: torch.device):
    """Tensors for :func:`_bilinear_cv2` on ``device``: the source rows read, the (k, w) integer horizontal weights
    over the k source columns read, the positions (among the rows read) of every output row's first rows then of its
    second rows, and their weights as a column."""
    x0, x1, a0, a1 = _cv2_axis(width, size[1], True)
    dense = np.zeros((size[1], width), np.float32)
    np.add.at(dense, (np.arange(size[1]), x0), a0)
    np.add.at(dense, (np.arange(size[1]), x1), a1)
    cols = (dense != 0).any(0).nonzero()[0]
    y0, y1, b0, b1 = _cv2_axis(height, size[0], False)
    rows = np.union1d(y0, y1)  # sorted
    def t(values, dtype=torch.int64):
        return torch.from_numpy(np.ascontiguousarray(values)).to(device=device, dtype=dtype)
    assert (b0 >= 0).all() and (b1 >= 0).all() and (b0 + b1 <= 2049).all()  # the bound _bilinear_cv2 relies on
    return (t(rows), t(dense[:, cols].T, torch.float32), t(cols), t(np.searchsorted(rows, np.concatenate([y0, y1]))),
            t(np.concatenate([b0, b1])[:, None], torch.int32))


@functools.lru_cache(maxsize=1)
def _opencv():
    """cv2 where it is installed (optional, never required): on the CPU it computes :func:`_bilinear_cv2`'s pixels
    itself, about 5x faster than the batched torch arithmetic; tests pin that both give the same bytes."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _bilinear_by_opencv(cv2: Any, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`_bilinear_cv2` by cv2 itself, one image at a time (HWC, as cv2 takes them)."""
    height, width = size
    n, c = x.shape[0], x.shape[1]
    src = x.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty((n, height, width, c), np.uint8)
    for i in range(n):
        out[i] = cv2.resize(src[i], (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _down_up_by_opencv(cv2: Any, x: torch.Tensor, size: int) -> torch.Tensor:
    """Both bilinear steps of the study's degradation by cv2, per image, converting the layout once."""
    n, c, height, width = x.shape
    src = x.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(src)
    for i in range(n):
        small = cv2.resize(src[i], (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _bilinear_cv2(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(x, (w, h), interpolation=INTER_LINEAR)`` of a uint8 batch (N, C, H, W), bit for bit, batched on
    the images' device. cv2's uint8 arithmetic: the horizontal pass sums ``pixel * weight`` (11-bit weights) into an
    int buffer (here a float32 matrix product over only the rows and columns read: every value is an integer below
    2^20, so exact); the vertical pass is its universal-intrinsics kernel (``VResizeLinearVec_32s8u``), which shifts
    each buffer value right by 4, takes the high 16 bits of the product with the row weight
    (``(v >> 4) * beta >> 16``) for each of the two rows, adds them and rounds off 2 more bits (``(sum + 2) >> 2``,
    saturated to 0..255). That is not the exact ``(S0 * b0 + S1 * b1 + 2^21) >> 22``; it is what cv2 returns
    (verified against opencv 5.1 at every size of tests/test_resize_cv2_exact.py, tails of rows included). The exact
    2x down-scale cv2 hands to INTER_AREA ((sum of 2 x 2 + 2) >> 2) gives the same values."""
    opencv = _opencv()
    if opencv is not None and x.device.type == "cpu":
        return _bilinear_by_opencv(opencv, x, tuple(size))
    rows, wx, cols, i01, b01 = _cv2_plan(x.shape[-2], x.shape[-1], tuple(size), x.device)
    if len(rows) < x.shape[-2]:
        x = x.index_select(-2, rows)
    if len(cols) < x.shape[-1]:
        x = x.index_select(-1, cols)
    buf = torch.matmul(x.float(), wx).to(torch.int32).bitwise_right_shift_(4)  # (N, C, k, w): the int buffer >> 4
    both = buf.index_select(-2, i01).mul_(b01).bitwise_right_shift_(16)  # rows y0 then rows y1, each weighted
    h = both.shape[-2] // 2
    # no clamp needed: each term is at most 32640 * b >> 16 and b0 + b1 <= 2049, so the sum is <= 1020 (255 after >> 2)
    return torch.add(both[..., :h, :], both[..., h:, :]).add_(2).bitwise_right_shift_(2).to(torch.uint8)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str, antialias: bool,
            fast: bool = False) -> torch.Tensor:
    """uint8 or float (N, C, H, W) -> a new float tensor of ``size``. ``fast``: bilinear without anti-aliasing by
    :func:`_bilinear` (``resize_down_up``, the training hot path; ``resize_to`` keeps ``interpolate``)."""
    if fast and mode == "bilinear" and not antialias:
        return _bilinear(x, size)
    x = x.float()
    if mode == "bicubic-pil":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)
    return F.interpolate(x, size=size, mode=mode)


def _to_uint8_values(x: torch.Tensor, rounding: str) -> torch.Tensor:
    """Clamp to 0..255 and round (or truncate, as TF's ``saturate_cast`` does), in place on a fresh float tensor."""
    x = x.clamp_(0, 255)
    return x.round_() if rounding == "round" else x.floor_()  # clamped values are >= 0: floor == truncation


def put_rows_(out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``out[index] = rows`` along dim 0, in place. On the CPU torch's ``index_copy_`` moves uint8 data an element at
    a time (16 us per 3 x 112 x 112 image, measured on torch 2.13); a copy per row is 2 us. Elsewhere one op."""
    if out.device.type != "cpu":
        return out.index_copy_(0, index, rows)
    for k, i in enumerate(index.tolist()):
        out[i].copy_(rows[k])
    return out


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float values already integral and in 0..255 (``_to_uint8_values``) as uint8, via int32: torch's direct
    float -> uint8 cast is not vectorised on the CPU (20 vs 6 us per 3 x 112 x 112 image, torch 2.13)."""
    return x.to(torch.int32).to(torch.uint8)


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
    todo = [s for s in per_image.unique().tolist() if s < height or s < width]
    if not todo:
        return images.clone()
    every = len(todo) == 1 and bool((per_image == todo[0]).all())  # one size for all: nothing to copy over
    out = torch.empty_like(images) if every else images.clone()
    # a step from uint8 to uint8 rounded to nearest, bilinear without anti-aliasing, is cv2 INTER_LINEAR bit for bit
    cv2_down = down == "bilinear" and not antialias and quantize_lr and rounding == "round"
    cv2_up = up == "bilinear" and quantize_lr and rounding == "round"
    opencv = _opencv() if cv2_down and cv2_up and images.device.type == "cpu" else None
    for size in todo:
        idx = (per_image == size).nonzero().squeeze(1).to(images.device)
        for part in idx.split(CHUNK):  # a few images at a time: the float intermediates stay in the CPU's cache
            chunk = images.index_select(0, part)
            if opencv is not None:  # both steps by cv2 itself, each image down and up in one go
                put_rows_(out, part, _down_up_by_opencv(opencv, chunk, size))
                continue
            if cv2_down:
                small = _bilinear_cv2(chunk, (size, size))
            else:
                small = _resize(chunk, (size, size), down, antialias, fast=True)
                if quantize_lr:
                    small = _as_uint8(_to_uint8_values(small, rounding)) if cv2_up else _to_uint8_values(small,
                                                                                                       rounding)
            if cv2_up:
                big = _bilinear_cv2(small, (height, width))
            else:
                big = _as_uint8(_to_uint8_values(_resize(small, (height, width), up, False, fast=True), rounding))
            put_rows_(out, part, big)
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
    return _as_uint8(_to_uint8_values(_resize(images, tuple(size), mode, antialias), "round"))


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
