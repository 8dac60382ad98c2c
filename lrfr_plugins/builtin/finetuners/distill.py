"""Label-free cross-resolution distillation: a frozen copy of the starting model teaches its low-resolution self.

The usual way to make a strong full-resolution recognizer hold up at 7-28 px without retraining it (teacher-student
cross-resolution training: Ge et al., "Low-Resolution Face Recognition in the Wild via Selective Knowledge
Distillation", TIP 2019; Massoli et al., "Cross-resolution learning for face recognition", IVC 2020): the teacher is
the model as it starts, frozen, and embeds each full-resolution image; the student (initialised from the same
weights) embeds a degraded copy of it and learns to land where the teacher put the original. Each face is distilled
sharp too (``hr_weight``), which anchors the student's 112 px embeddings to the teacher's: without that term the
demo's model lost 0.014 at 112 px for its low-resolution gains (eval/README.md, "Cross-resolution distillation").

Loss per step (batch of N images, teacher embeddings t_i of the originals, student embeddings s_i of the copies):

* ``cosine_weight`` x mean(1 - cos(s_i, t_i)), for the degraded copies and, times ``hr_weight``, for the sharp faces;
* ``relation_weight`` x the mean squared difference between the student's and the teacher's N x N cosine matrices
  (off-diagonal; Park et al., "Relational Knowledge Distillation", CVPR 2019): keeps the geometry between
  identities, not only each point;
* ``head_weight`` x the recipe's margin head on the student's embeddings, when the data has identity labels (the
  host passes the head and its class centres; they train too).

It needs only face images: an image folder without identity sub-folders works (labels are not read unless
``head_weight`` > 0). Degradation: this finetuner's own cross-resolution setting (``lr_fraction`` of every batch to
a size from ``sizes``, interpolation from ``preset``; the same degradation function as training and evaluation), or
the recipe's ``degradations`` with ``use_recipe_degradations: true``. BatchNorm statistics stay frozen unless
``train_bn`` (fine-tuning batches are mixed-resolution: their statistics would move the 112 px ones).

Metrics returned: ``steps``, ``initial_loss`` / ``final_loss`` (mean of the first / last ``window`` steps), and on a
fixed held-out batch excluded from training, the mean cosine between the student's embedding of an image degraded
to each size and the teacher's embedding of the original, before and after (``teacher_cosine_before`` /
``teacher_cosine_after``: {size: cosine}); at 112 px it measures how far the student drifted from the teacher.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ...api import FinetuneContext, Finetuner, param
from ...api.training import (OptimizerConfig, ShuffledBatchSampler, batchnorm_modules, build_optimizer, check_freeze,
                             estimate_quality, freeze_prefixes, hflip, load_batch, optimise, schedule_factor,
                             training_mode)
from ...errors import LrfrError
from ...ops.preprocess import to_network_input
from ...ops.resize import resize_down_up
from ..degradations.cross_resolution import PRESETS, CrossResolution, CrossResolutionParams, Preset


@dataclasses.dataclass(frozen=True)
class DistillParams:
    steps: int = param(500, "optimisation steps (batches; the data is reshuffled each time it is used up)", ge=1)
    batch_size: int | None = param(None, "images per step (null: the recipe's train.batch_size)", ge=2)
    optimizer: Literal["sgd", "adamw"] = param("adamw", "adamw or sgd (momentum 0.9) over the student")
    lr: float = param(1e-3, "peak learning rate: linear warm-up over warmup_steps, then cosine decay to 0", gt=0)
    weight_decay: float = param(5e-4, "weight decay", ge=0)
    warmup_steps: int = param(20, "linear learning-rate warm-up, in steps", ge=0)
    cosine_weight: float = param(1.0, "weight of mean(1 - cos(student(degraded), teacher(original)))", ge=0)
    relation_weight: float = param(0.0, "weight of the relational term: the student's batch cosine matrix against "
                                        "the teacher's (mean squared difference, off-diagonal)", ge=0)
    head_weight: float = param(0.0, "weight of the recipe's margin head on the student's embeddings (needs identity "
                                    "labels; its class centres train too); 0: label-free", ge=0)
    hr_weight: float = param(2.0, "weight of the full-resolution term: each image is also distilled as it is, beside "
                                  "its degraded copy, which holds the 112 px embeddings to the teacher's (twice the "
                                  "student's work per step); 0: only the degraded copies", ge=0)
    lr_fraction: float = param(1.0, "fraction of each batch's copies that is degraded (the others are distilled at "
                                    "full resolution too)", ge=0, le=1)
    sizes: list[int] = param([7, 14, 16, 28], "low-resolution sizes in px, one drawn per degraded image (the "
                                              "founding study's 16 and the benchmarks' 7/14/28)")
    preset: Preset = param("lozhkina", "interpolation of the degradation, as the cross-resolution degradation's "
                                       "presets: lozhkina (bilinear, no anti-aliasing: the study's train and test "
                                       "op), knoche (anti-aliased bicubic)")
    use_recipe_degradations: bool = param(False, "degrade with the recipe's degradations list instead of lr_fraction, "
                                                 "sizes and preset")
    hflip: float = param(0.5, "probability of a horizontal flip per image (teacher and student see the same flip)",
                         ge=0, le=1)
    train_bn: bool = param(False, "update BatchNorm statistics on the fine-tuning batches (default: frozen)")
    freeze: list[str] = param([], "parameter-name prefixes to freeze (e.g. [conv1, layer1] for iresnet)")
    eval_images: int = param(64, "held-out images (excluded from training) for the teacher-cosine metrics", ge=2)
    seed: int = param(0, "seed of the batch order and of the held-out images")

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError(f"sizes must be a non-empty list of positive sizes, got {self.sizes}")
        if self.cosine_weight == 0 and self.relation_weight == 0 and self.head_weight == 0:
            raise ValueError("every loss weight is 0: set cosine_weight, relation_weight or head_weight above 0")


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batches' cosine matrices, diagonal excluded (it is 1 in both)."""
    s, t = F.normalize(student, dim=1), F.normalize(teacher, dim=1)
    off = ~torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
    return ((s @ s.T - t @ t.T)[off] ** 2).mean()


class Distill(Finetuner):
    """Cross-resolution distillation: the student's embedding of a degraded face matches the frozen teacher's of
    the original (cosine, optional relational and margin terms); label-free by default."""

    Params = DistillParams

    def __init__(self, params: DistillParams):
        super().__init__(params)
        p = params
        self.degradation = CrossResolution(CrossResolutionParams(preset=p.preset, lr_fraction=p.lr_fraction,
                                                                 sizes=list(p.sizes)))

    def needs_labels(self) -> bool:
        return self.params.head_weight > 0

    def _degrade(self, images: torch.Tensor, context: FinetuneContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The copies and which of them are low-resolution (what a quality estimator reads, as in training)."""
        degradations = context.degradations if self.params.use_recipe_degradations else [self.degradation]
        lr_mask = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        for degradation in degradations:
            out = degradation(images, context.generator)
            images, lr_mask = out.images, lr_mask | out.lr_mask.to(images.device)
        return images, lr_mask

    def _loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        p = self.params
        loss = student.new_zeros(())
        if p.cosine_weight:
            loss = loss + p.cosine_weight * (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
        if p.relation_weight:
            loss = loss + p.relation_weight * relation_loss(student, teacher)
        return loss

    @torch.no_grad()
    def _teacher_cosines(self, student: torch.nn.Module, teacher_embeddings: torch.Tensor, images: torch.Tensor,
                         device: torch.device) -> dict[str, float]:
        """{size: mean cos(student(image at size), teacher(original))} on the held-out batch, eval mode."""
        preset = PRESETS[self.params.preset]
        was_training = student.training
        student.eval()
        try:
            out = {}
            for size in sorted({*self.params.sizes, images.shape[-1]}, reverse=True):
                sized = images if size >= images.shape[-1] else resize_down_up(
                    images, torch.full((images.shape[0],), size, dtype=torch.int64), down=preset["down"],
                    up=preset["up"], antialias=preset["antialias"], rounding=preset["rounding"],
                    quantize_lr=preset["quantize_lr"])
                embeddings = student(to_network_input(sized).to(device)).float()
                out[str(size)] = float(F.cosine_similarity(embeddings, teacher_embeddings, dim=1).mean())
            return out
        finally:
            student.train(was_training)

    def _check(self, context: FinetuneContext, has_labels: bool) -> None:
        p = self.params
        if p.use_recipe_degradations and not context.degradations:
            raise LrfrError("distill: use_recipe_degradations is true but the recipe's degradations list is empty: "
                            "add degradations or set use_recipe_degradations to false (its own sizes then apply).")
        if p.head_weight > 0 and (context.head is None or context.classifier is None or not has_labels):
            raise LrfrError(f"distill: head_weight={p.head_weight} needs identity labels and the recipe's margin head, "
                            "but the data has no identities (an image folder without identity sub-folders) or no "
                            "head reached the finetuner. Set head_weight to 0 for label-free distillation.")

    def check(self, backbone: torch.nn.Module) -> None:
        check_freeze(backbone, self.params.freeze)

    def run(self, context: FinetuneContext) -> dict[str, Any]:
        p, student, device = self.params, context.backbone, context.device
        batch_size = p.batch_size or context.batch_size
        dataset = context.dataset
        has_labels = getattr(dataset, "num_classes", 0) > 0
        self.check(student)
        self._check(context, has_labels)
        n = len(dataset)
        held_count = min(p.eval_images, n // 4)
        if n - held_count < batch_size or held_count < 2:
            raise LrfrError(f"distill: the data has {n} images; it needs at least batch_size ({batch_size}) for "
                            f"training plus {max(2, held_count)} held out. Lower batch_size or give more images.")
        order = np.random.default_rng([p.seed, 11]).permutation(n)
        held, train_idx = order[:held_count].tolist(), np.sort(order[held_count:])
        held_images, _, _ = load_batch(dataset, held)
        if held_images is None:
            raise LrfrError("distill: none of the held-out images could be read (skip_corrupt dropped them all).")

        teacher = copy.deepcopy(student).to(device).eval()
        for t in teacher.parameters():
            t.requires_grad_(False)
        with torch.no_grad():
            held_teacher = teacher(to_network_input(held_images).to(device)).float()
        before = self._teacher_cosines(student, held_teacher, held_images, device)

        frozen_params, frozen_modules = freeze_prefixes(student, p.freeze)
        if not p.train_bn:
            frozen_modules = frozen_modules + batchnorm_modules(student)
        keep_head = p.head_weight > 0
        reads_quality = keep_head and getattr(context.head, "needs_quality", False)

        def passes(epoch: int) -> ShuffledBatchSampler:
            return ShuffledBatchSampler(len(train_idx), batch_size, seed=p.seed, epoch=epoch)

        def batch_loss(batch: list[int]) -> torch.Tensor | None:
            images, labels, _ = load_batch(dataset, train_idx[batch])
            if images is None or images.shape[0] < 2:
                return None
            images = images.to(device)
            if p.hflip > 0:
                images = hflip(images, (torch.rand(images.shape[0], generator=context.generator) < p.hflip).to(device))
            with torch.no_grad():
                target = teacher(to_network_input(images)).float()
            copies, lr_mask = self._degrade(images, context)
            if p.hr_weight > 0:
                both = student(to_network_input(torch.cat([copies, images]))).float()
                embeddings, sharp = both[:images.shape[0]], both[images.shape[0]:]
                loss = self._loss(embeddings, target) + p.hr_weight * self._loss(sharp, target)
            else:
                embeddings = student(to_network_input(copies)).float()
                loss = self._loss(embeddings, target)
            if keep_head:
                quality = estimate_quality(context.quality if reads_quality else None, copies, lr_mask, embeddings)
                loss = loss + p.head_weight * context.classifier(embeddings, labels.to(device), context.head, quality)
            return loss

        with training_mode(student, frozen_modules, frozen_params) as trainable:
            extra = [*context.classifier.parameters(), *context.head.parameters()] if keep_head else []
            optimizer = build_optimizer([*trainable, *extra], OptimizerConfig(
                name=p.optimizer, lr=p.lr, momentum=0.9, weight_decay=p.weight_decay))
            losses, epoch = optimise(
                optimizer, p.steps, passes, batch_loss, name="distill", progress=context.progress,
                fix="Lower finetune.N.params.lr or raise warmup_steps.",
                lr_at=lambda step: p.lr * schedule_factor(step, p.steps, schedule="cosine",
                                                          warmup_steps=p.warmup_steps))
        after = self._teacher_cosines(student, held_teacher, held_images, device)
        window = max(1, min(5, p.steps // 5))
        return {"steps": len(losses), "initial_loss": float(np.mean(losses[:window])),
                "final_loss": float(np.mean(losses[-window:])), "epochs_started": epoch,
                "held_out_images": int(held_images.shape[0]), "labels_used": keep_head,
                "teacher_cosine_before": before, "teacher_cosine_after": after}
