"""Finetuners continue training a backbone with their own loss (Octuplet, DeriveNet) after the main training.

**Before anything trains.** The host calls ``check(backbone)`` on every finetuner of the recipe, with a freshly
built backbone of the recipe (untrained: its module and parameter names are what counts), before the main training
starts. Raise :class:`~lrfr_plugins.errors.ParamsError` with ``problems=[(parameter, what is wrong)]`` for a
parameter that cannot fit the backbone (a ``freeze`` prefix it does not have): the host reports it as
``finetune.N.params.<parameter>`` and trains nothing. The default checks nothing.

**When.** After the margin training (also after ``train.epochs: 0``), in the recipe's order, each on the backbone
the one before left; in the rank-0 process only, once training has finished on every rank. The host evaluates the
recipe's protocols before the first finetuner and after the last.

**What the host passes** (:class:`FinetuneContext`): the backbone (on ``device``, in train mode as training
left it; set the modes you need and restore them), the training dataset (read it in the main process or in your
own DataLoader), the recipe's degradations (call them as the trainer does: uint8 (N, 3, H, W) on the device and
``generator``), ``generator``, the run's CPU ``torch.Generator`` (its state continues the training's: draw every
random choice from it, or from a seed in your own parameters), and for finetuners that keep the margin loss the
trained ``head``, ``classifier`` and ``quality``. ``quality`` is None unless the head ``needs_quality``, so pass it
on exactly when it is set. The classifier is called as ``classifier(embeddings float32 (N, D), labels int64
(N,), head, quality or None)``; a stochastic head gets its ``generator`` from the classifier (the trainer's,
continued), so a finetuner calls it unchanged. The host sets no autocast and no ``torch.no_grad`` around ``run``.

**What comes back.** ``run`` trains ``context.backbone`` in place (the head and classifier too, if it optimises
them) and returns JSON-able metrics for ``metrics.json``.

**The host's parts.** ``lrfr_plugins.api.training`` gives the pieces the trainer and the built-in finetuners are
made of: the batch loader that drops unreadable images (``load_batch``), ``dataset_labels``, the samplers, freezing
(``check_freeze``, ``training_mode``), ``build_optimizer``, the loop skeleton ``optimise`` (which stops on a NaN
loss with ``NonFiniteLossError``, an LrfrError) and ``estimate_quality`` for the margin loss. Using them keeps a
finetuner's behaviour the host's; nothing else of the package (``lrfr_plugins.engine``) is for plugins.

**Checkpoints.** Nothing is saved during ``run``. When every finetuner has finished, the host writes the
fine-tuned backbone, head and classifier into the run's checkpoint with a mark that fine-tuning is done; a run
stopped during fine-tuning is resumed from the trained checkpoint and runs every finetuner again, with the same
generator state, so a finetuner that draws only from its seeds and ``generator`` repeats itself exactly. A
finetuner's own modules (DeriveNet's decoder) are not checkpointed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch

from ..params import NoParams


@dataclasses.dataclass
class FinetuneContext:
    """What the host hands a finetuner: the trained backbone and the recipe's data and degradations."""

    backbone: torch.nn.Module
    dataset: Any
    degradations: list[Any]
    device: torch.device
    generator: torch.Generator
    progress: bool = True
    #: The trained margin head, the class centres with the cross-entropy (``loss = classifier(embeddings, labels,
    #: head, quality)``, a :class:`~lrfr_plugins.engine.partial_fc.PartialFC`) and the recipe's quality estimator,
    #: for finetuners that keep the margin loss; None when the host has no trained head (``quality``: None also when
    #: the head does not read one).
    head: torch.nn.Module | None = None
    classifier: torch.nn.Module | None = None
    quality: Any | None = None
    #: The recipe's ``train.batch_size``, for finetuners whose batch size follows it when not given.
    batch_size: int = 64


class Finetuner:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def needs_labels(self) -> bool:
        """Whether ``run`` reads identity labels; the host refuses data without identities (an image folder with no
        identity sub-folders, ``num_classes`` 0) before anything trains when it does. Label-free finetuners say
        False."""
        return True

    def check(self, backbone: torch.nn.Module) -> None:
        """Check the parameters against the recipe's backbone before the main training (see the module doc); raise
        ParamsError naming the parameter. It must not change ``backbone``."""

    def run(self, context: FinetuneContext) -> dict[str, Any]:  # pragma: no cover
        """Train ``context.backbone`` in place; return metrics to record."""
        raise NotImplementedError
