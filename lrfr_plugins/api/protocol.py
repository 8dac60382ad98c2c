"""Evaluation protocols measure any model through an :data:`Embedder`; they never see the model itself.

Because a protocol only needs ``embed(uint8 images) -> embeddings``, the same protocol scores a torch model,
an ONNX file or an InsightFace model pack.

**What the host passes, and when.** ``check()`` before anything trains (in ``lrfr run``; cheap: files exist).
``evaluate(embed, progress=...)`` after training and fine-tuning (and before fine-tuning, for the comparison),
every ``train.eval_every`` epochs with ``progress=False``, and from ``lrfr eval``; on rank 0 only, in the main
process. ``embed`` takes uint8 (N, 3, 112, 112) RGB on the CPU, any N, and returns float32 numpy (N, D), not
normalised; it batches, moves to the device, runs the model in eval mode under ``torch.no_grad`` and restores its
mode. Degrade images for the low-resolution conditions with :func:`lrfr_plugins.ops.resize_down_up` before embedding.

**Seeds and state.** The host seeds nothing for a protocol: any random choice (pairs, folds) comes from its own
parameters, so that every model is scored on the same conditions. A protocol may keep what it loaded between
calls (the same instance evaluates several times in a run); none of it is checkpointed.
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
    #: One row per condition (e.g. per resolution) for the results table: {"resolution": "112px", "accuracy": ...}
    rows: list[dict[str, Any]]
    #: How the numbers were computed (preset, procedure, std kind), recorded with every result.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The machine-readable results (``lrfr eval --json``): condition key -> metrics. Keys per protocol:
    #: lfw/bin/synthetic "112", "56", ... -> {"accuracy", "std", "threshold"}; qmul-survface -> {"accuracy", "std",
    #: "auc", "tar@far=0.3", ...}; scface "d1", "d2", "d3" (and "d1-night", ...) -> {"rank1", "n_probes"}.
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: Curves for plots, each a dict of equal-length lists: "roc:<key>" -> {"fpr", "tpr"}, "cmc:<key>" ->
    #: {"rank", "rate"}. Keep them to a few hundred points (see :func:`lrfr_plugins.metrics.thin_curve`).
    curves: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    #: The preset the protocol ran with (e.g. "lozhkina"), or None.
    preset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Protocol:
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any):
        self.params = params

    def check(self) -> None:
        """A cheap look at the protocol's data (folders and files exist), run before training so that a wrong path
        stops a run in seconds rather than after its last epoch. Raise DataError naming what is missing."""

    def evaluate(self, embed: Embedder, *, progress: bool = True) -> ProtocolResult:  # pragma: no cover
        raise NotImplementedError
