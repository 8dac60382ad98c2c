"""Aligned face images in a folder per identity (``root/<identity>/<image>``), or named by a list file.

Faces are expected aligned at 112 x 112 (InsightFace's 5-point template); other sizes are resized, anti-aliased
bilinear, with one warning per dataset naming the first such file, because a misaligned set trains a worse model
without any error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ...api import FaceDataset, param
from ...errors import DataError
from ...formats.image_folder import scan_image_folder
from ...formats.images import decode_image
from .faces import FaceTensors, corrupt


@dataclasses.dataclass(frozen=True)
class ImageFolderParams:
    root: str = param(doc="folder with one sub-folder per identity: root/<identity>/<image>.jpg; a folder of images "
                          "without sub-folders has no identities (label-free fine-tuning only: finetuner distill)")
    list_file: str | None = param(None, "optional list of images, one '<path relative to root> [label]' per line "
                                        "(the founding study's train.txt); null: every image under root")
    skip_corrupt: bool = param(False, "skip images that cannot be read or decoded (each is logged, the run counts "
                                      "them) instead of stopping at the first")


class ImageFolder(FaceDataset):
    """Aligned 112x112 faces in root/<identity>/<image> (labels = sorted identity folders), a list file, or
    root/<image> without identities (labels -1, ``num_classes`` 0)."""

    Params = ImageFolderParams
    fixed_items = True

    def __init__(self, params: ImageFolderParams):
        super().__init__(params)
        self.index = scan_image_folder(params.root, params.list_file, unlabelled_ok=True)
        self.to_tensor = FaceTensors()

    @property
    def num_classes(self) -> int:
        return self.index.num_classes

    def __len__(self) -> int:
        return len(self.index.paths)

    def labels(self) -> np.ndarray:
        """From the folder index: no image is read."""
        return np.asarray(self.index.labels, dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path = self.index.paths[i]
        try:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise DataError(f"{path}: cannot read the image ({exc.strerror}).") from None
            pixels = decode_image(data, where=str(path))
        except DataError as exc:
            return corrupt(exc, self.params.skip_corrupt)
        return self.to_tensor(pixels, str(path)), self.index.labels[i]
