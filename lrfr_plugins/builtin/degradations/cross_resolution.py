"""Cross-resolution batches: a fraction of every batch is down-sampled and restored, the rest stays HR."""

from __future__ import annotations

import dataclasses

import torch

from ...api import Degradation, DegradedBatch, param
from ...ops.resize import Mode, resize_down_up


@dataclasses.dataclass(frozen=True)
class CrossResolutionParams:
    lr_fraction: float = param(0.5, "fraction of each batch that is degraded (the founding study: half)", ge=0, le=1)
    sizes: list[int] = param([16], "low-resolution sizes in px; one is drawn per image (the study: 16)")
    down: Mode = param("bilinear", "down-sampling interpolation")
    up: Mode = param("bilinear", "up-sampling interpolation back to the input size")
    antialias: bool = param(False, "anti-alias when down-sampling (the study's cv2 INTER_LINEAR does not)")
    exact_fraction: bool = param(True, "degrade exactly floor(lr_fraction*N) random images; false: each with p=lr_fraction")

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {self.sizes}")


class CrossResolution(Degradation):
    """The founding study's cross-resolution batch: half of each batch to 16x16 and back to 112 (bilinear)."""

    Params = CrossResolutionParams

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> DegradedBatch:
        p = self.params
        n = images.shape[0]
        if p.exact_fraction:
            chosen = torch.randperm(n, generator=generator)[: int(p.lr_fraction * n)]
            lr_mask = torch.zeros(n, dtype=torch.bool)
            lr_mask[chosen] = True
        else:
            lr_mask = torch.rand(n, generator=generator) < p.lr_fraction
        if not lr_mask.any():
            return DegradedBatch(images, lr_mask.to(images.device))
        choice = torch.randint(len(p.sizes), (int(lr_mask.sum()),), generator=generator)
        sizes = torch.tensor(p.sizes)[choice]
        out = images.clone()
        idx = lr_mask.nonzero().squeeze(1).to(images.device)
        out[idx] = resize_down_up(images[idx], sizes, down=p.down, up=p.up, antialias=p.antialias)
        return DegradedBatch(out, lr_mask.to(images.device))
