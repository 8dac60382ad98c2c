"""Cross-resolution batch-hard triplet fine-tuning: a face and its low-resolution copy should embed closer than any
other identity, in both directions.

Each step takes a batch of N labelled images (a fresh random permutation of the training images, re-drawn when used
up), makes one low-resolution copy of each (down-sampled to a size drawn per image from ``sizes`` and restored, with
:func:`lrfr_plugins.ops.resize_down_up`; or the recipe's ``degradations`` with ``use_recipe_degradations``) and
embeds the 2N images in one pass. With d the cosine distance 1 - cos of L2-normalised embeddings:

* HR anchors: for each image i, the hardest positive is the farthest LR copy of its identity (its own copy at
  least, so every anchor has one, even in a batch drawn without identity sampling) and the hardest negative the
  nearest LR copy of another identity; loss relu(d_pos - d_neg + margin);
* LR anchors: the same with the roles swapped (LR copy against the HR images).

The loss is the mean over the anchors that have a negative in the batch. BatchNorm statistics stay frozen unless
``train_bn`` (the batches are half low-resolution). ``needs_labels()`` is True: negatives are told apart by label.

Metrics returned (JSON-able): ``steps``, ``initial_loss`` / ``final_loss`` (means of the first and last
``clamp(steps // 5, 1, 5)`` steps), and on ``eval_images`` held-out images (not trained on) the mean cosine between each
image's HR embedding and that of its LR copy, before and after (``hr_lr_cosine_before`` / ``_after``).

Randomness: flips are not applied; the LR sizes (and the recipe's degradations) draw from ``context.generator``
(the run's CPU generator); the batch order from ``seed``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from lrfr_plugins import LrfrError
from lrfr_plugins.api import FinetuneContext, Finetuner, param
from lrfr_plugins.ops import resize_down_up, to_network_input


@dataclasses.dataclass(frozen=True)
class CrossResTripletParams:
    steps: int = param(100, "optimisation steps (batches)", ge=1)
    batch_size: int | None = param(None, "images per step (null: the recipe's train.batch_size)", ge=2)
    lr: float = param(1e-4, "AdamW learning rate (constant)", gt=0)
    weight_decay: float = param(5e-4, "AdamW weight decay", ge=0)
    margin: float = param(0.2, "triplet margin on the cosine distance 1 - cos", ge=0, le=2)
    sizes: list[int] = param([7, 14, 28], "low-resolution sizes in px, one drawn per image")
    down: Literal["bilinear", "bicubic", "area"] = param("bilinear", "down-sampling interpolation of the LR copy "
                                                                     "(no anti-aliasing; back up: bilinear)")
    use_recipe_degradations: bool = param(False, "make the copies with the recipe's degradations list instead "
                                                 "of sizes/down")
    train_bn: bool = param(False, "update BatchNorm statistics on the mixed HR/LR batches (default: frozen)")
    eval_images: int = param(32, "held-out images for the HR-LR cosine metrics (excluded from training)", ge=2)
    seed: int = param(0, "seed of the batch order and of the held-out images")

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {self.sizes}")


def batch_hard(anchors: torch.Tensor, others: torch.Tensor, labels: torch.Tensor,
               margin: float) -> torch.Tensor:
    """Per-anchor batch-hard triplet loss; anchor i's positives are others of its label (others[i] among them).
    Returns the losses of the anchors that have at least one negative."""
    dist = 1 - F.normalize(anchors, dim=1) @ F.normalize(others, dim=1).T
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    has_neg = (~same).any(1)
    return F.relu(hardest_pos - hardest_neg + margin)[has_neg]


class CrossResTriplet(Finetuner):
    """Batch-hard triplet loss between HR embeddings and those of their LR copies (both directions), a few steps."""

    Params = CrossResTripletParams

    def needs_labels(self) -> bool:
        return True

    def _copies(self, images: torch.Tensor, context: FinetuneContext) -> torch.Tensor:
        p = self.params
        if p.use_recipe_degradations:
            for degradation in context.degradations:
                images = degradation(images, context.generator).images
            return images
        choice = torch.randint(len(p.sizes), (images.shape[0],), generator=context.generator)
        sizes = torch.tensor(p.sizes, dtype=torch.int64)[choice]
        return resize_down_up(images, sizes, down=p.down, up="bilinear", antialias=False)

    @staticmethod
    def _load(dataset: Any, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        items = [item for item in (dataset[i] for i in indices) if item is not None]  # None: a skipped corrupt image
        if len(items) < 2:
            return None
        return torch.stack([image for image, _ in items]), torch.tensor([int(label) for _, label in items])

    @torch.no_grad()
    def _hr_lr_cosine(self, backbone: torch.nn.Module, images: torch.Tensor, lr: torch.Tensor,
                      device: torch.device) -> float:
        was_training = backbone.training
        backbone.eval()
        try:
            both = backbone(to_network_input(torch.cat([images, lr]).to(device))).float()
            n = images.shape[0]
            return float(F.cosine_similarity(both[:n], both[n:], dim=1).mean())
        finally:
            backbone.train(was_training)

    def run(self, context: FinetuneContext) -> dict[str, Any]:
        p, backbone, device, dataset = self.params, context.backbone, context.device, context.dataset
        batch_size = p.batch_size or context.batch_size
        if p.use_recipe_degradations and not context.degradations:
            raise LrfrError("cross-res-triplet: use_recipe_degradations is true but the recipe has no degradations: "
                            "add some, or set it to false (its own sizes then apply).")
        n = len(dataset)
        held_count = min(p.eval_images, n // 4)
        if held_count < 2 or n - held_count < batch_size:
            raise LrfrError(f"cross-res-triplet: the data has {n} images; it needs batch_size ({batch_size}) for "
                            f"training plus {max(2, p.eval_images)} held out. Lower batch_size or eval_images.")
        rng = np.random.default_rng([p.seed, 23])
        order = rng.permutation(n)
        held = self._load(dataset, order[:held_count].tolist())
        if held is None:
            raise LrfrError("cross-res-triplet: fewer than 2 of the held-out images could be read.")
        held_images = held[0]
        held_lr = self._copies(held_images, context).cpu()
        train_idx = order[held_count:]
        before = self._hr_lr_cosine(backbone, held_images, held_lr, device)

        trainable = [t for t in backbone.parameters() if t.requires_grad]
        if not trainable:
            raise LrfrError("cross-res-triplet: the backbone has no trainable parameter.")
        optimizer = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)
        norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        was_training = backbone.training
        losses: list[float] = []
        queue: list[int] = []
        skipped = 0
        backbone.train()
        if not p.train_bn:
            for m in norms:
                m.eval()
        try:
            while len(losses) < p.steps:
                if len(queue) < batch_size:
                    queue = rng.permutation(train_idx).tolist()
                batch, queue = queue[:batch_size], queue[batch_size:]
                loaded = self._load(dataset, batch)
                if loaded is None or int(loaded[1].unique().numel()) < 2:
                    skipped += 1  # unreadable, or a single identity: no negative to push away
                    if skipped > 100:
                        raise LrfrError("cross-res-triplet: 100 batches in a row had fewer than two readable images "
                                        "or a single identity; the data needs several identities.")
                    continue
                skipped = 0
                images, labels = loaded
                images = images.to(device)
                labels = labels.to(device)
                copies = self._copies(images, context)
                both = backbone(to_network_input(torch.cat([images, copies]))).float()
                hr, lr = both[:images.shape[0]], both[images.shape[0]:]
                loss = torch.cat([batch_hard(hr, lr, labels, p.margin), batch_hard(lr, hr, labels, p.margin)]).mean()
                if not torch.isfinite(loss):
                    raise LrfrError(f"cross-res-triplet: the loss is {loss.item()} at step {len(losses) + 1}; "
                                    "lower lr.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        finally:
            backbone.train(was_training)
        after = self._hr_lr_cosine(backbone, held_images, held_lr, device)
        window = max(1, min(5, len(losses) // 5))
        return {"steps": len(losses), "initial_loss": float(np.mean(losses[:window])),
                "final_loss": float(np.mean(losses[-window:])), "held_out_images": int(held_images.shape[0]),
                "hr_lr_cosine_before": before, "hr_lr_cosine_after": after}
