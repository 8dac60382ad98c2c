"""The network input convention: RGB, (x - 127.5) / 127.5, exactly what InsightFace's ArcFaceONNX feeds.

Also the rule by which ArcFaceONNX decides whether a model gets that normalisation, and the metadata an exported
model carries to declare it: export writes both, ``lrfr eval`` reads them (:mod:`lrfr_plugins.onnx_model.feeding`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

INPUT_MEAN = 127.5
INPUT_STD = 127.5
CHANNEL_ORDER = "RGB"
#: Metadata every export carries: how the model is fed, declared, so that ``lrfr eval`` need not infer it from the
#: graph (a backbone imported from an ONNX model that normalised its own input starts with constant Mul/Add ops that
#: turn our [-1, 1] input back into what it expects; read from the graph alone, they would look like normalisation).
FEEDING_METADATA = {"lrfr.input_mean": str(INPUT_MEAN), "lrfr.input_std": str(INPUT_STD),
                    "lrfr.channel_order": CHANNEL_ORDER}


def insightface_skips_normalisation(model: Any) -> bool:
    """True when ArcFaceONNX would treat the model as normalising its own input (first 8 nodes Sub* and Mul*)."""
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


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
    return out.copy_(images).sub_(INPUT_MEAN).div_(INPUT_STD)
