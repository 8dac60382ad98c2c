"""The network input convention: RGB, (x - 127.5) / 127.5, exactly what InsightFace's ArcFaceONNX feeds."""

from __future__ import annotations

import numpy as np
import torch


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> float32 in [-1, 1]. Kept out of the exported graph on purpose.

    One float buffer, converted and scaled in place (the same values as ``(x.float() - 127.5) / 127.5``). On the CPU
    the buffer comes from numpy, which asks Linux for transparent huge pages for large arrays: a training batch
    (256 x 3 x 112 x 112 floats, 38 MB) is past glibc's mmap threshold, so torch's allocator maps and page-faults it
    afresh every step, which cost more than the conversion itself (whole step 109 -> 18 us per image, torch 2.13).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    if images.device.type == "cpu":
        out = torch.from_numpy(np.empty(tuple(images.shape), dtype=np.float32))
    else:
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return out.copy_(images).sub_(127.5).div_(127.5)
