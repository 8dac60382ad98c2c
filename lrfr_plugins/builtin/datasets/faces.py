"""What the file datasets share: a decoded image as the dataset contract's 3x112x112 uint8 tensor, and the one
policy for corrupt images (stop with the fix named, or log, skip and let the trainer count)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...errors import DataError
from ...ops.resize import resize_to

log = logging.getLogger("lrfr")
SIZE = (112, 112)


def corrupt(exc: DataError, skip: bool) -> None:
    """Returns None (the item a dataset yields for a skipped image) after logging it, or raises with the fix."""
    if not skip:
        raise DataError(f"{exc} To skip such images, set data.params.skip_corrupt: true.") from None
    log.warning("skipping a corrupt image: %s", exc)
    return None


class FaceTensors:
    """HWC uint8 RGB pixels -> (3, 112, 112); other sizes are resized (anti-aliased bilinear) with one warning per
    dataset naming the first such image, because a misaligned set trains a worse model without any error."""

    def __init__(self) -> None:
        self.warned = False

    def __call__(self, pixels: np.ndarray, where: str) -> torch.Tensor:
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        if tuple(image.shape[1:]) == SIZE:
            return image
        if not self.warned:
            log.warning("%s is %dx%d, not an aligned 112x112 face: resizing it (and any other such image). "
                        "Align faces to InsightFace's 112x112 template for best accuracy.",
                        where, image.shape[2], image.shape[1])
            self.warned = True
        return resize_to(image[None], SIZE)[0]
