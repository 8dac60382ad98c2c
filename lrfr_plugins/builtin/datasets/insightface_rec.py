"""InsightFace training packs (``train.rec`` + ``train.idx`` + ``property``), read without mxnet.

The class count comes from ``property`` (checked against record 0 when that is face2rec2's meta-header), never
from a constant: the InsightFace CASIA-WebFace pack has 10,572 identities and 490,623 images, not the 10,575 /
494,414 many configs hard-code. Images decode to RGB, as arcface_torch's ``MXFaceDataset`` gives them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ...api import FaceDataset, param
from ...errors import DataError
from ...formats.recordio import TrainingSet
from .faces import SIZE, FaceTensors, corrupt


@dataclasses.dataclass(frozen=True)
class InsightFaceRecParams:
    root: str = param(doc="pack folder holding train.rec, train.idx and property (e.g. faces_webface_112x112)")
    rec: str = param("train.rec", "RecordIO file name inside root")
    idx: str = param("train.idx", "index file name inside root")
    skip_corrupt: bool = param(False, "skip images that cannot be decoded (each is logged, the run counts them) "
                                      "instead of stopping at the first")


class InsightFaceRec(FaceDataset):
    """InsightFace .rec/.idx training pack (face2rec2, RecBuilder or im2rec layout); no mxnet needed."""

    Params = InsightFaceRecParams
    fixed_items = True

    def __init__(self, params: InsightFaceRecParams):
        super().__init__(params)
        self.pack = TrainingSet(params.root, rec=params.rec, idx=params.idx)
        self.to_tensor = FaceTensors()
        if self.pack.num_classes is None:
            raise DataError(f"{self.pack.root}: no 'property' file and record 0 is not a meta-header, so the number "
                            "of classes is unknown. Write 'num_classes,112,112' to root/property.")

    @property
    def num_classes(self) -> int:
        return int(self.pack.num_classes)

    def __len__(self) -> int:
        return len(self.pack)

    def labels(self) -> np.ndarray:
        """From the record headers: every record is read but no image is decoded (a corrupt image keeps its label)."""
        keys = self.pack.image_keys
        return np.asarray([self.pack.label_of(self.pack.read(i)[0], keys[i]) for i in range(len(self))],
                          dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        return self._load(i)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int] | None]:
        """Batched read (DataLoader workers call this): every image is decoded straight into one preallocated
        uint8 batch, so an item costs no array or tensor of its own; items are (3, 112, 112) views of that batch,
        which the collate function stacks in one copy. Same items as ``[self[i] for i in indices]``."""
        hwc = torch.empty((len(indices), *SIZE, 3), dtype=torch.uint8)
        chw = hwc.permute(0, 3, 1, 2)
        slots = hwc.numpy()
        return [self._load(i, slots[k], chw[k]) for k, i in enumerate(indices)]

    def _load(self, i: int, out=None, view: torch.Tensor | None = None) -> tuple[torch.Tensor, int] | None:
        """Item ``i``; with ``out`` (HWC slot) and ``view`` (its CHW view), a 112 x 112 image is decoded there."""
        try:
            pixels, label = self.pack.get(i, out=out)
        except DataError as exc:
            return corrupt(exc, self.params.skip_corrupt)
        if out is not None and pixels is out:
            return view, label
        return self.to_tensor(pixels, f"{self.pack.reader.rec_path}: image {i}"), label
