"""Datasets: map-style, items ``(image, label)`` with image a uint8 RGB tensor (3, 112, 112) and label an int.

A dataset told to skip corrupt images (a ``skip_corrupt`` parameter) returns ``None`` for one it cannot read, after
logging which file or record it was; the trainer leaves it out of the batch and counts it.

**What the host asks, and where.** ``len(dataset)`` and ``num_classes`` (labels are 0 .. num_classes - 1; 0 means
data without identities, for label-free fine-tuning only) in the main process. ``dataset[i]`` (or
``__getitems__(indices)``, when defined, with the indices of one batch) runs in DataLoader **worker processes**
when ``train.num_workers`` > 0: the dataset is pickled into each worker, so keep open files and handles lazy (open
them on first read in the worker) and do not touch CUDA. The image is uint8 (3, 112, 112) RGB on the CPU; the host
moves the batch to the device, flips it and degrades it (degradations and hflip are the host's, not the dataset's).

**Seeds.** The batch order is the host's: a pure function of (seed, epoch) (``ShuffledBatchSampler``). A dataset
that augments randomly sets ``fixed_items = False`` and draws from torch's global RNG (seeded by the run; DataLoader
seeds each worker from it), so its draws repeat for the same run but not across a mid-epoch resume; numpy and
``random`` are not seeded by the host.

**Checkpoints.** None of the dataset is checkpointed: a resumed run rebuilds it from the recipe and must see the
same items at the same indices.
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
