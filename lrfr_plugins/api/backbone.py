"""Backbones map network input (N, 3, 112, 112), RGB scaled to [-1, 1], to un-normalised embeddings (N, D).

**What the host passes.** ``forward(x)``: float32 (N, 3, 112, 112), RGB, (pixel - 127.5) / 127.5 (InsightFace's
ArcFaceONNX convention), on the training device. In training the backbone is in train mode, ``x`` may be
channels-last (``train.channels_last``) and the call runs under ``torch.autocast`` (bf16 or fp16) when
``train.amp`` is set; the module may be wrapped in DistributedDataParallel and ``torch.compile``. In evaluation
(protocols, periodic evaluation, the embedders of finetuners) it is in eval mode under ``torch.no_grad`` and
without autocast.

**What comes back.** (N, ``embedding_size``) raw embeddings, any float dtype (the host casts to float32 before the
classifier); not normalised: heads and protocols normalise, and the feature-norm quality reads the norm.

**Seeds.** The host seeds torch's global RNG with the recipe's ``seed`` (the same on every rank) just before the
backbone is built, so initialise from the global RNG; a weights file loaded in ``__init__`` replaces that.

**Checkpoints and export.** ``state_dict()`` (parameters and buffers) is checkpointed and restored on resume;
nothing else of the module is. ``model.onnx`` is exported from a float32 CPU copy in eval mode with
``torch.onnx.export`` (TorchScript tracing, dynamic batch), so ``forward`` must be traceable.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..params import NoParams


class Backbone(torch.nn.Module):
    """Subclass and set ``embedding_size``; ``forward`` returns raw embeddings (heads and protocols normalise)."""

    Params: ClassVar[type] = NoParams
    #: InsightFace's ArcFaceONNX feeds (x - 127.5) / 127.5 on RGB: the input convention every backbone shares.
    input_size: ClassVar[int] = 112

    def __init__(self, params: Any):
        super().__init__()
        self.params = params

    @property
    def embedding_size(self) -> int:  # pragma: no cover - subclasses override
        raise NotImplementedError
