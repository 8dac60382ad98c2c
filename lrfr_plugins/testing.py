"""Conformance checks for plugin authors: a plugin's test file is three lines.

    from lrfr_plugins.testing import check_plugin
    def test_my_head():
        check_plugin("head", "curricularface")

Each check exercises the contract the host relies on and raises AssertionError with what is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def check_head(head: torch.nn.Module, num_classes: int = 5) -> None:
    """Scaled logits (N, C), finite at cosine = +-1 and for C = 1, rows with label -1 only scaled, gradients flow."""
    g = torch.Generator().manual_seed(0)
    for c in (num_classes, 1):
        cosine = (torch.rand(6, c, generator=g) * 2 - 1)
        cosine[0] = 1.0
        cosine[1] = -1.0
        cosine.requires_grad_(True)
        labels = torch.randint(0, c, (6,), generator=g)
        labels[-1] = -1
        quality = torch.rand(6, generator=g) if getattr(head, "needs_quality", False) else None
        logits = head(cosine, labels, quality)
        assert logits.shape == (6, c), f"expected logits of shape (6, {c}), got {tuple(logits.shape)}"
        assert torch.isfinite(logits).all(), "logits are not finite at cosine = +-1"
        torch.nn.functional.cross_entropy(logits[:-1], labels[:-1]).backward()
        assert cosine.grad is not None and torch.isfinite(cosine.grad).all(), "no finite gradient w.r.t. cosine"
        row, cos_row = logits[-1].detach(), cosine[-1].detach()
        nonzero = cos_row.abs() > 1e-3
        ratio = row[nonzero] / cos_row[nonzero]
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-4), "a row with label -1 must only be scaled"


def check_backbone(backbone: torch.nn.Module) -> None:
    """(N, 3, 112, 112) -> (N, embedding_size), in train and eval mode."""
    size = backbone.embedding_size
    x = torch.randn(2, 3, 112, 112)
    for mode in (True, False):
        backbone.train(mode)
        out = backbone(x)
        assert out.shape == (2, size), f"expected (2, {size}), got {tuple(out.shape)}"
        assert torch.isfinite(out).all()


def check_degradation(degradation: Any) -> None:
    """Same-shape uint8 batch, a bool mask per image, deterministic for a given generator."""
    x = torch.randint(0, 256, (6, 3, 112, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = degradation(x, torch.Generator().manual_seed(1))
    b = degradation(x, torch.Generator().manual_seed(1))
    assert a.images.dtype == torch.uint8 and a.images.shape == x.shape
    assert a.lr_mask.dtype == torch.bool and a.lr_mask.shape == (6,)
    assert torch.equal(a.images, b.images) and torch.equal(a.lr_mask, b.lr_mask), "not deterministic"


def check_dataset(dataset: Any) -> None:
    """len(), num_classes, items (uint8 3x112x112 RGB tensor, int label in range)."""
    assert len(dataset) > 0 and dataset.num_classes > 0
    for index in (0, len(dataset) - 1):
        image, label = dataset[index]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.shape == (3, 112, 112)
        assert isinstance(label, int) and 0 <= label < dataset.num_classes


def check_protocol(protocol: Any) -> None:
    """evaluate(embedder) returns rows; it must accept any embedder of the documented signature."""
    rng = np.random.default_rng(0)

    def embed(images: torch.Tensor) -> np.ndarray:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 112, 112)
        return rng.standard_normal((images.shape[0], 8)).astype(np.float32)

    result = protocol.evaluate(embed, progress=False)
    assert result.rows, "a protocol must return at least one row"


def check_quality(quality: Any) -> None:
    """Quality (4,) finite from uint8 images, or from embeddings when the estimator says it uses them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8, generator=g)
    if getattr(quality, "uses_embeddings", False):
        q = quality(x, embeddings=torch.randn(4, 16, generator=g))
    else:
        q = quality(x)
    assert q.shape == (4,) and torch.isfinite(q).all()


CHECKS = {"head": check_head, "backbone": check_backbone, "degradation": check_degradation,
          "dataset": check_dataset, "protocol": check_protocol, "quality": check_quality}


def check_plugin(kind: str, name: str, **params: Any) -> None:
    """Create the registered plugin with ``params`` and run the conformance check of its kind."""
    from . import create

    plugin = create(kind, name, **params)
    check = CHECKS.get(kind)
    if check is not None:
        check(plugin)
