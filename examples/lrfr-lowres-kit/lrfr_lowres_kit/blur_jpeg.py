"""Blur and JPEG: a Gaussian blur of random strength, then JPEG re-compression at a random quality, for a fraction
of the batch (the two commonest losses of real low-quality captures besides down-sampling).

Per image, drawn on the run's CPU generator (always the same draws per image, whatever is selected, so the stream
does not depend on the batch's content): selected with probability ``fraction``; a blur sigma uniform in
[``sigma_min``, ``sigma_max``] px; a JPEG quality uniform in [``quality_min``, ``quality_max``]. A selected image is
blurred (separable Gaussian, radius ceil(3 sigma), reflected border, on the images' device; skipped when sigma <
0.3, where the kernel is nearly a delta), then encoded and decoded as JPEG with PIL (4:2:0 chroma, on the CPU).

The two masks of :class:`lrfr_plugins.api.DegradedBatch`:

* ``changed``: every image whose pixels differ from the input, measured on the result (so an image that JPEG left
  bit-identical is not marked);
* ``lr_mask``: the images blurred with sigma >= ``lr_sigma`` (default 1.0 px, the anti-aliasing blur of a 3x
  down-sampling by the usual rule sigma = (factor - 1) / 2, i.e. an effective resolution below ~37 px for a 112 px
  face). A lighter blur and JPEG alone change pixels but are not "low resolution"; an ``lr_mask`` image is
  always ``changed``.
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lrfr_plugins.api import DegradedBatch, Degradation, param


@dataclasses.dataclass(frozen=True)
class BlurJpegParams:
    fraction: float = param(0.5, "probability that an image is degraded (blurred, then JPEG-compressed)", ge=0, le=1)
    sigma_min: float = param(0.5, "smallest Gaussian blur sigma in px (below 0.3: no blur)", ge=0)
    sigma_max: float = param(2.0, "largest Gaussian blur sigma in px", ge=0, le=10)
    quality_min: int = param(30, "lowest JPEG quality", ge=1, le=100)
    quality_max: int = param(90, "highest JPEG quality", ge=1, le=100)
    lr_sigma: float = param(1.0, "a blur of at least this sigma counts as low-resolution (lr_mask); JPEG never "
                                 "does", ge=0)

    def __post_init__(self) -> None:
        if self.sigma_min > self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) is above sigma_max ({self.sigma_max})")
        if self.quality_min > self.quality_max:
            raise ValueError(f"quality_min ({self.quality_min}) is above quality_max ({self.quality_max})")


def blur_matrices(sigmas: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """(K, n, n) float32: row i of matrix k averages the taps i - r..i + r of a length-n signal with a Gaussian of
    ``sigmas[k]``, r = ceil(3 sigma) (at most n - 1), weights normalised to 1, taps past an end reflected (torch's
    ``reflect``, cv2's ``BORDER_REFLECT_101``); a 1-D separable convolution as one matrix product."""
    s = sigmas.to(torch.float64).clamp(min=1e-6)
    radii = torch.ceil(3 * s).clamp(1, n - 1)
    r = int(radii.max())
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-(t * t) / (2 * s[:, None] ** 2)) * (t.abs() <= radii[:, None])  # each image's own radius
    w = w / w.sum(1, keepdim=True)
    j = torch.arange(n)[:, None] + torch.arange(-r, r + 1)  # (n, 2r + 1) source positions
    j = torch.where(j < 0, -j, j)
    j = torch.where(j > n - 1, 2 * (n - 1) - j, j)
    k = sigmas.shape[0]
    m = torch.zeros(k, n, n, dtype=torch.float64)
    m.scatter_add_(2, j.expand(k, n, 2 * r + 1), w[:, None, :].expand(k, n, 2 * r + 1))
    return m.to(device=device, dtype=torch.float32)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """uint8 (K, 3, H, W) -> uint8, image k blurred by a separable Gaussian of ``sigmas[k]`` px (radius
    ceil(3 sigma), reflected border): two batched matrix products on the images' device (a depthwise conv2d with
    per-image kernels is ~100x slower on the CPU)."""
    _, _, h, w = images.shape
    rows = blur_matrices(sigmas, h, images.device)[:, None]  # (K, 1, H, H)
    cols = blur_matrices(sigmas, w, images.device)[:, None]  # (K, 1, W, W)
    out = rows @ images.float() @ cols.transpose(-1, -2)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (3, H, W) -> the same image encoded and decoded as JPEG at ``quality`` (PIL, on the CPU)."""
    pixels = image.permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.device)


class BlurJpeg(Degradation):
    """Gaussian blur (random sigma) then JPEG (random quality) for a fraction of the batch; strong blur = LR."""

    Params = BlurJpegParams

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> DegradedBatch:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"blur-jpeg expects a uint8 RGB batch (N, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        p, n = self.params, images.shape[0]
        # Every draw on the CPU generator, a fixed number per image (the resumed-run stream stays aligned).
        selected = torch.rand(n, generator=generator) < p.fraction
        sigmas = p.sigma_min + (p.sigma_max - p.sigma_min) * torch.rand(n, generator=generator, dtype=torch.float64)
        qualities = torch.randint(p.quality_min, p.quality_max + 1, (n,), generator=generator)
        blurred = selected & (sigmas >= 0.3)
        out = images
        if bool(selected.any()):
            out = images.clone()
            rows = blurred.nonzero().squeeze(1)
            if rows.numel():
                on_device = rows.to(images.device)
                out[on_device] = gaussian_blur(images[on_device], sigmas[rows])
            for i in selected.nonzero().squeeze(1).tolist():
                out[i] = jpeg(out[i], int(qualities[i]))
        changed = (out != images).flatten(1).any(1)
        lr_mask = blurred.to(images.device) & (sigmas >= p.lr_sigma).to(images.device) & changed
        return DegradedBatch(out, lr_mask=lr_mask, changed=changed)
