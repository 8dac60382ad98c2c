"""A surveillance camera's view of an aligned 112 px face: small, blurred, noisy, JPEG-compressed, not square.

Down-sampling alone (LR-LFW's recipe) leaves a clean small image; surveillance faces (QMUL-SurvFace, SCface) are
natively small and also carry optical blur, sensor noise and compression. The capture is: area-average the face to
``height`` x ``width`` px (a sensor integrates light over each pixel), a Gaussian blur of ``blur`` px at that scale
(defocus and motion), additive Gaussian noise of ``noise`` grey levels, rounding, then JPEG at ``quality``. Each
image gets its own draws from the caller's numpy generator, so a protocol's probe set is fixed by its seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..formats.images import decode_image, encode_image
from ..ops.resize import resize_to


@dataclasses.dataclass(frozen=True)
class CaptureRange:
    """Per-image draws, each uniform in [lo, hi]."""

    height: tuple[int, int]
    aspect: tuple[float, float] = (0.75, 0.9)  # width / height: QMUL-SurvFace faces average 24.3 x 19.9 px
    blur: tuple[float, float] = (0.3, 1.0)
    noise: tuple[float, float] = (2.0, 6.0)
    quality: tuple[int, int] = (40, 85)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a float (C, H, W) image, border replicated."""
    if sigma <= 0:
        return image
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def capture(images: torch.Tensor, draws: CaptureRange, rng: np.random.Generator) -> list[torch.Tensor]:
    """uint8 (N, 3, 112, 112) aligned faces -> N small uint8 (3, h, w) surveillance captures."""
    out = []
    for image in images:
        height = int(rng.integers(draws.height[0], draws.height[1] + 1))
        width = max(4, round(height * rng.uniform(*draws.aspect)))
        small = resize_to(image[None], (height, width), mode="area")[0].float()
        small = _gaussian_blur(small, float(rng.uniform(*draws.blur)))
        small = small + torch.from_numpy(rng.normal(0.0, rng.uniform(*draws.noise), small.shape).astype(np.float32))
        pixels = small.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        jpeg = encode_image(pixels, quality=int(rng.integers(draws.quality[0], draws.quality[1] + 1)))
        out.append(torch.from_numpy(decode_image(jpeg, "synthetic capture")).permute(2, 0, 1).contiguous())
    return out
