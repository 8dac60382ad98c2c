"""Octuplet finetuning (Knoche et al., FG 2023): batch-hard HR/LR triplet terms on doubled P x K batches.

Every step draws a P x K batch (:class:`~lrfr_plugins.api.training.IdentityBatchSampler`), degrades **every**
image once (a size per image from ``sizes``, by default the ``knoche`` preset: bicubic a = -0.5 with anti-aliasing
down, bicubic a = -0.5 up, float LR intermediate, result truncated to uint8), feeds HR and LR through the backbone as
one doubled batch (REFERENCE §9.3: "the first half original, the second half down-sampled") and minimises
:func:`~lrfr_plugins.losses.octuplet.octuplet_loss`. The degradation draws use the context's generator; the
recipe's own ``degradations`` are not used (the octuplet batch needs an LR copy of every image).

What the paper leaves open (REFERENCE §9.3) is a parameter here: optimiser, learning rate, steps, normalisation.
Embeddings are **not** L2-normalised by default (the reference's loss does not normalise for the euclidean metrics);
``normalize: true`` normalises them before the loss.

Metrics returned: ``steps``; ``initial_loss`` / ``final_loss`` = the mean training loss over the first / last
``window`` steps (``window = clamp(steps // 5, 1, 5)``; one batch is noisy); ``lr_hr_cosine_before`` /
``lr_hr_cosine_after`` = on a fixed held-out batch (images excluded from training when the identities have enough
images), backbone in eval mode, the mean cosine between the LR embedding of one image and the HR embedding of a
*different* image of the same identity (the cross-resolution genuine pairs); ``held_out_loss_before`` /
``held_out_loss_after`` = the octuplet loss on that batch; ``held_out_images`` and ``held_out_disjoint`` (whether the
batch was excluded from training).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ...api import FinetuneContext, Finetuner, param
from ...api.training import (IdentityBatchSampler, OptimizerConfig, build_optimizer, check_freeze, dataset_labels,
                             estimate_quality, freeze_prefixes, load_batch, optimise, training_mode)
from ...errors import DataError, ParamsError
from ...losses.octuplet import METRICS, Metric, octuplet_loss
from ...ops.preprocess import to_network_input
from ...ops.resize import Mode, Rounding, check_modes, resize_down_up


@dataclasses.dataclass(frozen=True)
class OctupletParams:
    steps: int = param(1000, "optimisation steps (P x K batches; the sampler starts a new epoch when exhausted)", ge=1)
    p: int = param(16, "identities per batch", ge=2)
    k: int = param(4, "images per identity per batch (>= 2: a batch-hard triplet needs a positive)", ge=1)
    lr: float = param(1e-3, "learning rate", gt=0)
    optimizer: Literal["sgd", "adamw"] = param("sgd", "sgd (momentum) or adamw")
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    weight_decay: float = param(5e-4, "weight decay", ge=0)
    margin: float = param(0.5, "triplet margin", ge=0)
    metric: Metric = param("euclidean", "distance: euclidean, euclidean_squared or cosine (1 - cos)")
    terms: list[bool] = param([True, True, True, True], "switch each term on/off: [HR/HR, HR anchor with LR pos/neg, "
                                                        "LR anchor with HR pos/neg, LR/LR]")
    normalize: bool = param(False, "L2-normalise embeddings before the loss (the reference does not)")
    sizes: list[int] = param([7, 14, 28], "LR sizes in px, one drawn per image (knoche preset)")
    down: Mode = param("bicubic-pil", "down-sampling interpolation (knoche preset: bicubic-pil, anti-aliased)")
    up: Mode = param("bicubic-pil", "up-sampling interpolation back to the input size (knoche preset)")
    antialias: bool = param(True, "anti-alias when down-sampling (knoche preset: true)")
    rounding: Rounding = param("truncate", "result to uint8: round or truncate (knoche preset: truncate, as TF)")
    quantize_lr: bool = param(False, "round the LR intermediate to uint8 (knoche preset: false, float)")
    head_weight: float = param(0.0, "weight of the trained margin head's loss kept during finetuning, on the HR and "
                                    "LR copies alike (0: the octuplet loss alone); its class centres train too",
                               ge=0)
    freeze: list[str] = param([], "parameter-name prefixes to freeze (e.g. [conv1, layer1] for iresnet); their "
                                  "modules also stay in eval mode (BatchNorm statistics frozen)")
    eval_identities: int = param(8, "identities in the fixed held-out batch (2 images each) for the LR-HR cosine",
                                 ge=1)
    seed: int = param(0, "seed of the identity sampler and of the held-out batch")

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k={self.k}: the octuplet loss needs k >= 2 images per identity in a batch (with one, "
                             "an anchor has no positive and its hardest-positive distance is 0)")
        if len(self.terms) != 4 or not any(self.terms):
            raise ValueError(f"terms must be 4 switches [hh, hl, lh, ll] with at least one true, got {self.terms}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {self.sizes}")
        check_modes(self.down, self.up, self.antialias, self.rounding)


class Octuplet(Finetuner):
    """Octuplet loss finetuning: batch-hard triplets across HR and LR copies of P x K batches (Knoche et al. 2023)."""

    Params = OctupletParams

    def _degrade(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        choice = torch.randint(len(p.sizes), (images.shape[0],), generator=generator)
        sizes = torch.tensor(p.sizes, dtype=torch.int64)[choice]
        return resize_down_up(images, sizes, down=p.down, up=p.up, antialias=p.antialias, rounding=p.rounding,
                              quantize_lr=p.quantize_lr)

    def _embed(self, backbone: torch.nn.Module, hr: torch.Tensor, lr: torch.Tensor,
               device: torch.device) -> torch.Tensor:
        x = to_network_input(torch.cat([hr, lr]).to(device))
        embeddings = backbone(x)
        return F.normalize(embeddings, dim=1) if self.params.normalize else embeddings

    def _loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = self.params
        return octuplet_loss(embeddings, labels.to(embeddings.device), margin=p.margin, metric=p.metric,
                             terms=p.terms)

    def _held_out(self, labels: np.ndarray) -> tuple[np.ndarray, bool]:
        """A fixed batch: 2 images of each of ``eval_identities`` identities; excluded from training (disjoint) when
        the identities it uses keep at least ``2`` images for training."""
        rng = np.random.default_rng([self.params.seed, 7])
        values, counts = np.unique(labels, return_counts=True)
        for minimum, disjoint in ((4, True), (2, False)):
            eligible = values[counts >= minimum]
            if len(eligible) >= 2:
                chosen = rng.permutation(eligible)[: self.params.eval_identities]
                picked = [rng.choice(np.flatnonzero(labels == c), 2, replace=False) for c in chosen]
                return np.concatenate(picked), disjoint
        raise DataError("octuplet: the data needs at least 2 identities with 2 or more images each (the held-out "
                        "batch compares two images of one identity); use data with more images per identity.")

    @torch.no_grad()
    def _measure(self, backbone, hr, lr, labels, device) -> dict[str, float]:
        """Eval-mode cosines on the held-out batch: LR vs HR of the same image, of another image of the same identity
        (genuine), of another identity (impostor); and the octuplet loss."""
        was_training = backbone.training
        backbone.eval()
        try:
            embeddings = self._embed(backbone, hr, lr, device)
            loss = self._loss(embeddings, labels).item()
            b = hr.shape[0]
            e = F.normalize(embeddings.float(), dim=1)
            cos = e[b:] @ e[:b].T  # LR rows x HR columns
            lab = labels.to(cos.device)
            same = lab.unsqueeze(1) == lab.unsqueeze(0)
            eye = torch.eye(b, dtype=torch.bool, device=cos.device)
            return {"same_image": float(cos[eye].mean()), "genuine": float(cos[same & ~eye].mean()),
                    "impostor": float(cos[~same].mean()), "loss": loss}
        finally:
            backbone.train(was_training)

    @staticmethod
    def _head_loss(context: FinetuneContext, embeddings: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
        """The trained head's margin loss on the HR and LR rows, with the quality its head needs (the LR copies
        flagged as degraded, so resolution-flag and Laplacian qualities see what they saw in training)."""
        images = torch.cat([hr, lr])
        lr_mask = torch.arange(images.shape[0], device=images.device) >= hr.shape[0]
        reads = getattr(context.head, "needs_quality", False)
        quality = estimate_quality(context.quality if reads else None, images, lr_mask, embeddings)
        targets = torch.cat([labels, labels]).to(embeddings.device)
        return context.classifier(embeddings.float(), targets, context.head, quality)

    def check(self, backbone: torch.nn.Module) -> None:
        check_freeze(backbone, self.params.freeze)

    def run(self, context: FinetuneContext) -> dict[str, Any]:
        p, backbone, device, generator = self.params, context.backbone, context.device, context.generator
        self.check(backbone)
        keep_head = p.head_weight > 0
        if keep_head and (context.head is None or context.classifier is None):
            problem = (f"{p.head_weight} keeps the margin head's loss, but no trained head reached the finetuner: run "
                       "it from a recipe (finetune: [...]) so that the host passes the head and its class centres, "
                       "or set head_weight to 0")
            raise ParamsError(f"head_weight={problem}", [("head_weight", problem)])
        labels = dataset_labels(context.dataset)
        held, disjoint = self._held_out(labels)
        train_idx = np.setdiff1d(np.arange(len(labels)), held) if disjoint else np.arange(len(labels))
        try:
            sampler = IdentityBatchSampler(labels[train_idx], p.p, p.k, seed=p.seed)
        except ValueError as exc:
            raise DataError(f"octuplet: {exc}. Lower finetune.N.params.p (now {p.p}) or use data with more "
                            "identities.") from None
        eval_hr, eval_labels, _ = load_batch(context.dataset, held)
        if eval_hr is None:
            raise DataError("octuplet: none of the held-out images could be read (skip_corrupt dropped them all).")
        eval_hr = eval_hr.to(device)
        eval_lr = self._degrade(eval_hr, torch.Generator().manual_seed(p.seed))  # fixed, not the context's draws
        frozen_params, frozen_modules = freeze_prefixes(backbone, p.freeze)
        before = self._measure(backbone, eval_hr, eval_lr, eval_labels, device)
        head_losses: list[float] = []

        def passes(epoch: int) -> IdentityBatchSampler:
            sampler.set_epoch(epoch)
            return sampler

        def batch_loss(batch: list[int]) -> torch.Tensor | None:
            hr, batch_labels, _ = load_batch(context.dataset, train_idx[batch])
            if hr is None or hr.shape[0] < 2:
                return None
            hr = hr.to(device)
            lr = self._degrade(hr, generator)
            embeddings = self._embed(backbone, hr, lr, device)
            loss = self._loss(embeddings, batch_labels)
            if keep_head:
                head_loss = self._head_loss(context, embeddings, hr, lr, batch_labels)
                head_losses.append(head_loss.item())
                loss = loss + p.head_weight * head_loss
            return loss

        with training_mode(backbone, frozen_modules, frozen_params) as trainable:
            if keep_head:
                trainable = trainable + list(context.classifier.parameters()) + list(context.head.parameters())
            optimizer = build_optimizer(trainable, OptimizerConfig(name=p.optimizer, lr=p.lr, momentum=p.momentum,
                                                                   weight_decay=p.weight_decay))
            losses, epoch = optimise(optimizer, p.steps, passes, batch_loss, name="octuplet", progress=context.progress,
                                     fix=f"Lower finetune.N.params.lr (now {p.lr:g}).")
        after = self._measure(backbone, eval_hr, eval_lr, eval_labels, device)
        window = max(1, min(5, p.steps // 5))
        metrics = {"steps": len(losses), "initial_loss": float(np.mean(losses[:window])),
                   "final_loss": float(np.mean(losses[-window:])),
                   "lr_hr_cosine_before": before["same_image"], "lr_hr_cosine_after": after["same_image"]}
        for key in ("genuine", "impostor", "loss"):
            name = "held_out_loss" if key == "loss" else f"lr_hr_{key}_cosine"
            metrics[f"{name}_before"], metrics[f"{name}_after"] = before[key], after[key]
        metrics.update({"held_out_images": len(held), "held_out_disjoint": bool(disjoint),
                        "epochs_started": epoch})
        if head_losses:
            metrics["head_loss_initial"] = float(np.mean(head_losses[:window]))
            metrics["head_loss_final"] = float(np.mean(head_losses[-window:]))
        return metrics
