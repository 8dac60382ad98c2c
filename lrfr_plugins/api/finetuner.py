"""Finetuners continue training a backbone with their own loss (Octuplet, DeriveNet) after the main training."""

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
    #: for finetuners that keep the margin loss; None when the host has no trained head.
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

    def run(self, context: FinetuneContext) -> dict[str, Any]:  # pragma: no cover
        """Train ``context.backbone`` in place; return metrics to record."""
        raise NotImplementedError
