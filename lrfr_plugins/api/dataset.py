"""Datasets: map-style, items ``(image, label)`` with image a uint8 RGB tensor (3, 112, 112) and label an int.

A dataset told to skip corrupt images (a ``skip_corrupt`` parameter) returns ``None`` for one it cannot read, after
logging which file or record it was; the trainer leaves it out of the batch and counts it.

**What the host asks, and where.** ``len(dataset)`` and ``num_classes`` (labels are 0 .. num_classes - 1; 0 means
data without identities, for label-free fine-tuning only) in the main process. ``dataset[i]`` (or
``__getitems__(indices)``, when defined, with the indices of one batch) runs in DataLoader **worker processes**
when ``train.num_workers`` > 0: the dataset is pickled into each worker, so keep open files and handles lazy (open
them on first read in the worker) and do not touch CUDA. The image is uint8 (3, 112, 112) RGB on the CPU; the host
moves the batch to the device, flips it and degrades it (degradations and hflip are the host's, not the dataset's).

**Labels without pixels.** ``labels()`` returns every item's label (int64, ``len(dataset)``, index order). The host
asks it in the main process when a finetuner samples by identity (octuplet's P x K batches). The default reads every
item, decoding every image; a dataset that knows its labels from an index or a formula overrides it (the built-ins
do), so the answer takes no image reads.

**Seeds.** The batch order is the host's: a pure function of (seed, epoch) (``ShuffledBatchSampler``). A dataset
that augments randomly sets ``fixed_items = False`` and draws from torch's global RNG (seeded by the run; DataLoader
seeds each worker from it), so its draws repeat for the same run but not across a mid-epoch resume; numpy and
``random`` are not seeded by the host.

**Checkpoints.** None of the dataset is checkpointed: a resumed run rebuilds it from the recipe and must see the
same items at the same indices.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch.utils.data

from ..errors import DataError, LrfrError
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

    def labels(self) -> np.ndarray:
        """Every item's label, int64 (len(self),), in index order. This default reads every item (slow on a large
        set: it decodes every image); override it when the labels are known without the pixels."""
        return read_labels(self)


def read_labels(dataset: Any) -> np.ndarray:
    """The labels of any map-style dataset of ``(image, label)`` items, by one pass over the items."""
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        if item is None:
            raise DataError(f"dataset item {i} cannot be read (skipped as corrupt), so its label is unknown: give the "
                            "dataset a labels() that reads them without the images, or set data.params.skip_corrupt "
                            "to false to see which image it is.")
        labels.append(int(item[1]))
    return np.asarray(labels, dtype=np.int64)


def dataset_labels(dataset: Any) -> np.ndarray:
    """``dataset.labels()`` (every :class:`FaceDataset` has it), or one pass over the items of a dataset without it
    (a ``torch.utils.data.Subset``, a plain map-style dataset); checked to be one label per item."""
    method = getattr(dataset, "labels", None)
    labels = np.asarray(method() if callable(method) else read_labels(dataset))
    if labels.ndim != 1 or len(labels) != len(dataset):
        raise LrfrError(f"{type(dataset).__name__}.labels() gave shape {labels.shape} for {len(dataset)} items: it "
                        "must return one label per item, in index order.")
    return labels
