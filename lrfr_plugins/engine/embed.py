"""Turn a backbone into an :data:`~lrfr_plugins.api.Embedder` for protocols."""

from __future__ import annotations

import numpy as np
import torch

from ..ops.preprocess import to_network_input


def make_embedder(backbone: torch.nn.Module, device: torch.device, batch_size: int = 256):
    """uint8 RGB (N, 3, 112, 112) -> float32 (N, D) numpy embeddings, in eval mode and without gradients."""

    @torch.no_grad()
    def embed(images: torch.Tensor) -> np.ndarray:
        was_training = backbone.training
        backbone.eval()
        try:
            out = [backbone(to_network_input(images[i:i + batch_size]).to(device)).float().cpu()
                   for i in range(0, images.shape[0], batch_size)]
        finally:
            backbone.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    return embed
