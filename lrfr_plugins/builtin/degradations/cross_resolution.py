"""Cross-resolution batches: a fraction of every batch is down-sampled and restored, the rest stays HR.

Presets (REFERENCE §8, PROTOCOLS §3.5-3.6):

* ``lozhkina`` (the default; the founding study): ``lr_fraction`` 0.5, size 16, bilinear down and up without
  anti-aliasing (cv2 ``INTER_LINEAR`` semantics), LR intermediate and result rounded to uint8.
* ``knoche`` (Knoche et al. / Octuplet, ``resizing.py`` with the follow-up's per-image sizes): ``lr_fraction`` 0.5, a
  size per image from {7, 14, 28}, down ``bicubic-pil`` with anti-aliasing and up ``bicubic-pil`` (both Keys
  a = -0.5: TF's and PIL's bicubic, not torch's a = -0.75 up-sampling kernel), the LR intermediate kept in float, and
  the result **truncated** to uint8 as TF's ``saturate_cast`` does (clamp, then drop the fraction; on average 0.5 grey
  level darker than rounding). The preset follows the authors' code; set ``rounding: round`` and/or
  ``quantize_lr: true`` to deviate.
* ``none``: no preset; every parameter left unset takes the plugin's base value, which is the founding study's.

How a preset combines with explicit parameters: every parameter a preset sets has the default ``null``, meaning
"from the preset". ``__post_init__`` replaces each ``null`` by the preset's value, so **an explicit value always
overrides the preset**, even one equal to the study's value, and there is no ambiguity between "left at its default"
and "set to the default value". The size set is one unit: giving ``sizes`` or ``size_range`` explicitly replaces
the preset's sizes as a whole (giving both is an error). The resolved recipe (and ``lrfr validate``) therefore shows
the effective values, with ``preset`` kept as a label of where they came from; loading a resolved recipe again gives
the same parameters (every field is explicit then). Consequence: editing ``preset`` in a *resolved* recipe changes
nothing, because every value is already explicit; edit the values, or start from the original recipe.

``lr_mask`` marks the images made low-resolution (``changed`` is the same mask). An image drawn with a size >= its height and width is left unchanged and is **not**
marked, so with sizes that reach the input size (e.g. ``size_range: [5, 112]``) fewer than ``lr_fraction`` of the
images are marked. All work runs batched on the images' device (torch ops, one interpolate pair per distinct size);
the random draws use the caller's CPU generator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch

from ...api import Degradation, DegradedBatch, param
from ...ops.resize import Mode, Rounding, check_modes, put_rows_, resize_down_up

Preset = Literal["lozhkina", "knoche", "none"]

#: The values each preset fills in for parameters left ``null``. ``none`` = the base values (the study's).
PRESETS: dict[str, dict[str, Any]] = {
    "lozhkina": {"lr_fraction": 0.5, "sizes": [16], "per_image": True, "down": "bilinear", "up": "bilinear",
                 "antialias": False, "rounding": "round", "quantize_lr": True},
    "knoche": {"lr_fraction": 0.5, "sizes": [7, 14, 28], "per_image": True, "down": "bicubic-pil",
               "up": "bicubic-pil", "antialias": True, "rounding": "truncate", "quantize_lr": False},
}
PRESETS["none"] = dict(PRESETS["lozhkina"])

FROM_PRESET = "null: from the preset"


@dataclasses.dataclass(frozen=True)
class CrossResolutionParams:
    preset: Preset = param("lozhkina", "fills every parameter left null: lozhkina (the founding study: 0.5, 16 px, "
                                       "bilinear, no AA), knoche (0.5, {7,14,28} px per image, bicubic a=-0.5 with AA, "
                                       "float LR, truncated like TF), none (base values = lozhkina's); explicit "
                                       "parameters override it")
    lr_fraction: float | None = param(None, f"fraction of each batch that is degraded ({FROM_PRESET})", ge=0, le=1)
    sizes: list[int] | None = param(None, f"low-resolution sizes in px, one drawn uniformly per draw ({FROM_PRESET}; "
                                          "exclusive with size_range)")
    size_range: list[int] | None = param(None, "[lo, hi] px inclusive, a uniform integer per draw, instead of sizes")
    per_image: bool | None = param(None, f"true: a size per image; false: one size per batch ({FROM_PRESET})")
    down: Mode | None = param(None, f"down-sampling interpolation ({FROM_PRESET})")
    up: Mode | None = param(None, f"up-sampling interpolation back to the input size ({FROM_PRESET})")
    antialias: bool | None = param(None, f"anti-alias when down-sampling ({FROM_PRESET}; the study's cv2 "
                                         "INTER_LINEAR does not)")
    rounding: Rounding | None = param(None, f"to uint8: round (nearest) or truncate (TF saturate_cast) ({FROM_PRESET})")
    quantize_lr: bool | None = param(None, f"round the LR intermediate to uint8 (a stored small image); false keeps it "
                                           f"float, as TF's op does ({FROM_PRESET})")
    exact_fraction: bool = param(True, "degrade exactly floor(lr_fraction*N) random images; false: each with "
                                       "p=lr_fraction")

    def __post_init__(self) -> None:
        if self.sizes is not None and self.size_range is not None:
            raise ValueError("give either sizes or size_range, not both")
        values = PRESETS[self.preset]
        for name, value in values.items():
            if name == "sizes" and self.size_range is not None:
                continue  # the size set is one unit: an explicit size_range replaces the preset's sizes
            if getattr(self, name) is None:
                object.__setattr__(self, name, list(value) if isinstance(value, list) else value)
        if self.sizes is not None and (not self.sizes or any(s < 1 for s in self.sizes)):
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {self.sizes}")
        if self.size_range is not None:
            r = self.size_range
            if len(r) != 2 or r[0] < 1 or r[0] > r[1]:
                raise ValueError(f"size_range must be [lo, hi] with 1 <= lo <= hi, got {r}")
        check_modes(self.down, self.up, self.antialias, self.rounding)


class CrossResolution(Degradation):
    """Cross-resolution batches: a fraction of each batch down-sampled and restored (presets lozhkina, knoche)."""

    Params = CrossResolutionParams

    def _draw_sizes(self, count: int, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        if p.size_range is not None:
            return torch.randint(p.size_range[0], p.size_range[1] + 1, (count,), generator=generator)
        choice = torch.randint(len(p.sizes), (count,), generator=generator)
        return torch.tensor(p.sizes, dtype=torch.int64)[choice]

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> DegradedBatch:
        p = self.params
        n, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        if p.exact_fraction:
            chosen = torch.randperm(n, generator=generator)[: math.floor(p.lr_fraction * n + 1e-9)]
            lr_mask = torch.zeros(n, dtype=torch.bool)
            lr_mask[chosen] = True
        else:
            lr_mask = torch.rand(n, generator=generator) < p.lr_fraction
        if not lr_mask.any():
            return DegradedBatch(images, lr_mask.to(images.device))
        idx = lr_mask.nonzero().squeeze(1)
        sizes = self._draw_sizes(len(idx) if p.per_image else 1, generator).expand(len(idx))
        changed = (sizes < height) | (sizes < width)  # a size >= the input leaves the image as it is: not LR
        lr_mask[idx[~changed]] = False
        idx, sizes = idx[changed], sizes[changed]
        if len(idx) == 0:
            return DegradedBatch(images, lr_mask.to(images.device))
        out = images.clone()
        dev_idx = idx.to(images.device)
        put_rows_(out, dev_idx, resize_down_up(images.index_select(0, dev_idx), sizes, down=p.down, up=p.up,
                                               antialias=p.antialias, rounding=p.rounding, quantize_lr=p.quantize_lr))
        return DegradedBatch(out, lr_mask.to(images.device))
