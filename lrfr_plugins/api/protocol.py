"""Evaluation protocols measure any model through an :data:`Embedder`; they never see the model itself.

Because a protocol only needs ``embed(uint8 images) -> embeddings``, the same protocol scores a torch model,
an ONNX file or an InsightFace model pack.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from ..params import NoParams

#: uint8 RGB images (N, 3, 112, 112) -> float32 embeddings (N, D), not normalised.
Embedder = Callable[[torch.Tensor], np.ndarray]


@dataclasses.dataclass
class ProtocolResult:
    protocol: str
    #: One row per condition (e.g. per resolution): {"condition": "112px", "accuracy": 0.93, ...}
    rows: list[dict[str, Any]]
    #: How the numbers were computed (preset, procedure, std kind), recorded with every result.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Protocol:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:  # pragma: no cover
        raise NotImplementedError
