"""Degradations turn a uint8 batch into a (partly) low-resolution batch and say which images they degraded.

Two masks, two meanings, both bool (N,) on the images' device:

* ``lr_mask``: the image was made **low-resolution** (down-sampled and restored, or otherwise reduced to a lower
  effective resolution). What resolution-aware methods read: the ``resolution-flag`` quality, Approach 1, the
  octuplet's HR/LR pairs.
* ``changed``: **any pixel** of the image differs from the input (blur, noise, JPEG, down-sampling...). The host
  recomputes an image's cached quality only where it is set, so a degradation must mark every image it touched.
  Left out, it defaults to ``lr_mask`` (right for a degradation that only down-samples).

A JPEG-only degradation returns ``changed`` True and ``lr_mask`` False for the images it compressed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from ..params import NoParams


@dataclasses.dataclass
class DegradedBatch:
    images: torch.Tensor  #: uint8 (N, 3, H, W), same size and device as the input
    lr_mask: torch.Tensor  #: bool (N,): True where the image was made low-resolution
    changed: torch.Tensor | None = None  #: bool (N,): True where any pixel changed; None means ``lr_mask``

    def __post_init__(self) -> None:
        if self.changed is None:
            self.changed = self.lr_mask


class Degradation:
    """``degradation(images, generator) -> DegradedBatch``.

    ``images``: uint8 (N, 3, H, W) RGB, 0..255, on the training device (a GPU in real runs), already flipped,
    after any earlier degradation of the recipe. ``generator``: the run's **CPU** ``torch.Generator``
    (checkpointed, so a resumed run draws the same numbers): draw every random choice on the CPU with it, then move
    the result to ``images.device``. Do not modify ``images`` in place; return a new tensor (or the same one when
    nothing changed). Called in training and fine-tuning, never in evaluation (protocols degrade through
    :func:`lrfr_plugins.ops.resize_down_up`), in the main process, outside autocast and without gradients (the images are
    integers). A degradation holds no state the host checkpoints: everything random comes from ``generator``.
    """

    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> DegradedBatch:  # pragma: no cover
        raise NotImplementedError
