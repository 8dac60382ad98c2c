"""Quality estimators: per-sample quality (N,) float, from the images as the network sees them or from embeddings.

**What the host passes, and when.** Only for a head with ``needs_quality`` (for any other head the recipe's
estimator is ignored with a warning and never built or called). In training, once per step:

* an image estimator (the default) is called *before* the forward pass with ``images``: uint8 (N, 3, H, W) RGB,
  0..255, on the training device, after the flip and every degradation of the recipe and before normalisation;
  ``lr_mask`` (N,) bool marks the images a degradation made low-resolution
  (:class:`~lrfr_plugins.api.DegradedBatch`). It runs outside autocast and without ``torch.no_grad``; the value
  needs no gradient.
* one that sets ``uses_embeddings = True`` (the feature norm of AdaFace and MagFace) is called *after* the forward
  pass, outside autocast, with ``embeddings=`` the backbone's raw output, float32 (N, D); it may keep the value
  differentiable (MagFace trains through it).

With ``cacheable`` and a dataset whose items are fixed, the host calls the estimator only on the rows it has no
value for, or that a degradation ``changed``, so a call may see any subset of a batch (even a single image).
Finetuners get the estimator as ``context.quality`` and call it the same way, only when their head needs it.

**What comes back.** float (N,), one value per image, on the images' device, finite.

**Units.** Heads set their defaults for one estimator's range (``Head.calibrated_quality``), so a value means
nothing without its units. An estimator's units are its registered name unless ``units`` (or ``units_for``, for
units that depend on the parameters) names another estimator whose values it shares in range and meaning: an
estimator that returns 1 for full-resolution and 0 for degraded images may declare ``units = "resolution-flag"``,
and Approach 1 then takes it without a warning.

**State, seeds, workers.** The host does not checkpoint an estimator (nothing of it is in ``state_dict``), seeds
nothing for it and runs it in the main process: it must be a deterministic function of its input.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Quality:
    Params: ClassVar[type] = NoParams
    #: True: the host passes ``embeddings=`` (after the backbone) instead of calling before the forward pass.
    uses_embeddings: ClassVar[bool] = False
    #: True: an image's quality depends on its pixels alone and not on a horizontal flip, so the trainer may keep
    #: the value of an undegraded training image and reuse it in later epochs (only degraded images are computed).
    cacheable: ClassVar[bool] = False
    #: The estimator (registered name) whose units this one's values share; None: its own registered name.
    units: ClassVar[str | None] = None

    def __init__(self, params: Any):
        self.params = params

    @classmethod
    def units_for(cls, params: Any) -> str | None:
        """The units with these parameters (``units`` unless overridden); None: the registered name."""
        return cls.units

    def __call__(self, images: torch.Tensor, *, lr_mask: torch.Tensor | None = None,
                 embeddings: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
