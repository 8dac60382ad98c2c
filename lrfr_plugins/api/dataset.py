"""Datasets: map-style, items ``(image, label)`` with image a uint8 RGB tensor (3, 112, 112) and label an int.

A dataset told to skip corrupt images (a ``skip_corrupt`` parameter) returns ``None`` for one it cannot read, after
logging which file or record it was; the trainer leaves it out of the batch and counts it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.utils.data

from ..params import NoParams


class FaceDataset(torch.utils.data.Dataset):
    Params: ClassVar[type] = NoParams
    #: True when item i is the same pixels every time it is read (no random augmentation inside the dataset); the
    #: trainer then may cache per-image values such as a cacheable quality.
    fixed_items: ClassVar[bool] = False

    def __init__(self, params: Any):
        self.params = params

    @property
    def num_classes(self) -> int:  # pragma: no cover
        raise NotImplementedError
