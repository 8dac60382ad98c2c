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


class Finetuner:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def run(self, context: FinetuneContext) -> dict[str, Any]:  # pragma: no cover
        """Train ``context.backbone`` in place; return metrics to record."""
        raise NotImplementedError
