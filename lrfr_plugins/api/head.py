"""Margin heads: ``head(cosine, labels, quality=None)`` -> scaled logits ready for cross-entropy.

Class centres live in the classifier (Partial FC style), not in the head: ``cosine`` (N, C) is normalised
embeddings times normalised centres, clamped to [-1, 1]. A label of -1 means the row's class lives on another
rank; such rows are only scaled.

**What the host passes, and when.** :class:`~lrfr_plugins.engine.partial_fc.PartialFC` calls the head once per
training step (and once per step of a finetuner that keeps the margin loss), always *outside* autocast:

* ``cosine``: float32 (N, C), on the training device; N is the batch gathered over all ranks (the same N rows on
  every rank), C this rank's (possibly sampled) share of the classes. It carries the gradient.
* ``labels``: int64 (N,), the column of each row's class in ``cosine``, -1 where another rank owns it.
* ``quality``: float (N,) on the device, only for a head with ``needs_quality`` (else None): the values of the
  recipe's estimator for the same rows, gathered like the embeddings. It may carry a gradient (``feature-norm``,
  which MagFace trains through); detach it if the head must not.
* ``generator=``: only for a head with ``stochastic = True`` (see below).

The head is in train mode while training (``head.train()``); the host never calls it in evaluation (protocols
read the backbone only). Return float (N, C) logits; the host adds ``extra_loss()`` after the cross-entropy.

**Randomness.** A head that draws random numbers (ElasticFace's per-sample margin ~ N(m, sigma)) sets
``stochastic = True`` and takes ``generator: torch.Generator`` as a keyword: the host passes a generator on
cosine's device, seeded from the run seed, distinct per rank, saved in the checkpoint and restored on resume.
Draw *every* random number from it (``torch.randn(n, generator=generator, device=generator.device)``), never
from torch's global RNG, so that a run is reproducible and a resumed run draws exactly what an uninterrupted one
would. Draws differ per rank: use them where only the rank that owns a row's target reads them (a per-row target
margin is fine). A head with ``stochastic = False`` (the default) is called without ``generator``.

**Checkpoints.** Everything in the head's ``state_dict`` (parameters and buffers, e.g. AdaFace's EMA norm
statistics) is checkpointed and restored on resume; plain attributes are not, so keep state that must survive a
resume in buffers. The head's parameters are optimised with the backbone's learning rate.

**Quality units.** ``calibrated_quality`` names the estimator whose value range the head's defaults were set for
(its units: see :attr:`~lrfr_plugins.api.Quality.units`). When a recipe pairs the head with an estimator of other
units, recipe validation (``lrfr validate``, ``lrfr run``) warns with the text :meth:`Head.quality_mismatch`
returns; by default it does so unless the recipe sets one of ``quality_reference_params`` itself. A recipe that
names a quality for a head without ``needs_quality`` gets a warning too, and the estimator is never built or
called.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Head(torch.nn.Module):
    Params: ClassVar[type] = NoParams
    #: A head that needs a per-sample quality sets this; the host then computes it and passes it. Without it the
    #: recipe's quality estimator is ignored (a warning) and never called.
    needs_quality: ClassVar[bool] = False
    #: The quality estimator used when the recipe names none.
    default_quality: ClassVar[str | None] = None
    #: The quality units (an estimator's name, see ``Quality.units``) the head's parameter defaults are set for;
    #: None when the head assumes no particular range.
    calibrated_quality: ClassVar[str | None] = None
    #: Parameters that set the head's quality scale: a recipe that sets one of them has recalibrated the head for
    #: its estimator, and the default ``quality_mismatch`` no longer warns.
    quality_reference_params: ClassVar[tuple[str, ...]] = ()
    #: True: ``forward`` draws random numbers and is called with ``generator=`` (see the module docstring).
    stochastic: ClassVar[bool] = False

    def __init__(self, params: Any):
        super().__init__()
        self.params = params

    def forward(self, cosine: torch.Tensor, labels: torch.Tensor,
                quality: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """A stochastic head adds ``*, generator: torch.Generator`` to this signature."""
        raise NotImplementedError

    def extra_loss(self) -> torch.Tensor | None:
        """A regulariser the training loss adds (e.g. MagFace's g(a)); None for most heads."""
        return None

    @classmethod
    def quality_mismatch(cls, name: str, params: dict[str, Any], explicit: frozenset[str], quality: str,
                         units: str) -> str | None:
        """The warning for pairing this head with estimator ``quality`` (of ``units``), or None when it fits.

        Called at recipe validation, before anything is built: ``name`` is the head's registered name, ``params``
        its resolved parameter values, ``explicit`` the parameter names the recipe itself set, ``quality`` the
        estimator as the message should name it (its units added when they are not its name). Heads override it to
        explain what goes wrong with their own formula, or to return None where the head adapts to any range.
        """
        calibrated = cls.calibrated_quality
        refs = cls.quality_reference_params
        if calibrated is None or units == calibrated or explicit & set(refs):
            return None
        if not refs:
            return (f"head {name}'s margins are calibrated for the {calibrated} quality and no parameter "
                    f"recalibrates them; with {quality} they may not mean what they should. Use "
                    f"quality: {{name: {calibrated}}}.")
        values = ", ".join(f"{k}={params[k]}" for k in refs)
        sets = " and ".join(f"head.params.{k}" for k in refs)
        return (f"head {name}'s {values} {'is' if len(refs) == 1 else 'are'} calibrated for the {calibrated} "
                f"quality; with {quality}, whose values may lie in another range, the margin may stay at one end "
                f"of its range for every image. Set {sets} to typical {units} values of your data.")
