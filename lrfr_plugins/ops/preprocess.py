"""The network input convention: RGB, (x - 127.5) / 127.5, exactly what InsightFace's ArcFaceONNX feeds."""

from __future__ import annotations

import torch


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> float32 in [-1, 1]. Kept out of the exported graph on purpose."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return (images.float() - 127.5) / 127.5
