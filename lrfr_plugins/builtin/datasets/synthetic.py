"""The embedded default data: procedurally drawn face identities, generated on the fly from a seed."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import torch

from ...api import FaceDataset, param
from ...synthetic import SyntheticFaceGenerator


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    num_identities: int = param(300, "number of identities (classes)", ge=2)
    images_per_identity: int = param(30, "images drawn per identity", ge=1)
    seed: int = param(0, "generator seed: the same seed gives the same pixels")
    split: Literal["train", "test"] = param("train", "'test' identities are disjoint from 'train' ones (held out)")
    pose: float = param(1.0, "strength of pose variation (0: none)", ge=0)
    expression: float = param(1.0, "strength of expression variation (0: none)", ge=0)
    illumination: float = param(1.0, "strength of illumination variation (0: none)", ge=0)
    noise: float = param(1.0, "strength of pixel noise (0: none)", ge=0)
    cache: bool = param(True, "render every image once and keep it in memory (37.6 KB an image): faster epochs")


class SyntheticDataset(FaceDataset):
    """Built-in synthetic faces: identity at coarse, mid and fine spatial frequencies; CPU-fast, no files."""

    Params = SyntheticParams
    fixed_items = True

    def __init__(self, params: SyntheticParams):
        super().__init__(params)
        self.generator = SyntheticFaceGenerator(params.seed, params.split, pose=params.pose,
                                                expression=params.expression, illumination=params.illumination,
                                                noise=params.noise)
        self._cache: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return self.params.num_identities

    def __len__(self) -> int:
        return self.params.num_identities * self.params.images_per_identity

    def labels(self) -> np.ndarray:
        """Identity-major order: item i is identity i // images_per_identity (nothing is rendered)."""
        return np.arange(len(self), dtype=np.int64) // self.params.images_per_identity

    def render(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, 112, 112) RGB for dataset indices (identity-major order)."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} images")
        if self.params.cache:
            if self._cache is None:
                self._cache = torch.cat([self._draw(np.arange(i, min(i + 1024, len(self))))
                                         for i in range(0, len(self), 1024)])
            return self._cache[torch.from_numpy(indices)]
        return self._draw(indices)

    def _draw(self, indices: np.ndarray) -> torch.Tensor:
        per = self.params.images_per_identity
        pixels = self.generator.render(indices // per, indices % per)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.render(np.array([index]))[0], int(index) // self.params.images_per_identity

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched rendering (DataLoader calls this): one vectorised draw instead of N small ones."""
        images = self.render(np.array(indices))
        per = self.params.images_per_identity
        return [(images[k], int(i) // per) for k, i in enumerate(indices)]
