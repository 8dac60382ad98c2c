"""The training loop: cross-resolution batches -> backbone -> classifier -> margin head -> cross-entropy.

It checkpoints at every epoch end (atomically) and can continue from the last finished epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import LrfrError
from ..ops.preprocess import to_network_input
from ..recipe import OptimizerConfig, TrainConfig
from .checkpoint import save_checkpoint
from .classifier import NormalizedClassifier

log = logging.getLogger("lrfr")


def collate_readable(items: list) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Stack the items a dataset could read; ``None`` items (corrupt images a dataset was told to skip) are counted.

    Returns (images, labels, skipped); images and labels are None when no item of the batch was readable.
    """
    present = [item for item in items if item is not None]
    if not present:
        return None, None, len(items)
    images, labels = torch.utils.data.default_collate(present)
    return images, labels, len(items) - len(present)


@dataclasses.dataclass
class TrainComponents:
    backbone: torch.nn.Module
    head: torch.nn.Module
    dataset: Any
    degradations: list[Any]
    quality: Any | None


def lr_factor(step: int, epoch: int, total_steps: int, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then x gamma per milestone reached, or a cosine decay to 0.

    A pure function of the position, so a resumed run follows the same schedule without saved scheduler state.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.schedule == "cosine":
        progress = min(1.0, max(0, step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
    return warm * config.gamma ** sum(1 for m in config.milestones if epoch >= m)


def build_optimizer(params: list[dict], config: OptimizerConfig) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class Trainer:
    """Owns the optimisation state of one run; ``state_dict`` is everything needed to continue it."""

    def __init__(self, parts: TrainComponents, config: TrainConfig, optimizer: OptimizerConfig,
                 device: torch.device, seed: int):
        self.parts, self.config, self.opt_config, self.device = parts, config, optimizer, device
        self.classifier = NormalizedClassifier(parts.dataset.num_classes, parts.backbone.embedding_size)
        parts.backbone.to(device)
        parts.head.to(device)
        self.classifier.to(device)
        groups = [{"params": list(parts.backbone.parameters()) + list(parts.head.parameters()), "scale": 1.0},
                  {"params": list(self.classifier.parameters()), "scale": config.embedding_lr_scale}]
        self.optimizer = build_optimizer(groups, optimizer)
        self.generator = torch.Generator().manual_seed(seed)
        self.loader_generator = torch.Generator().manual_seed(seed + 1)
        self.epoch = 0  # epochs finished
        self.step = 0
        self.seconds = 0.0
        self.last_loss = float("nan")
        self.skipped_images = 0

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "seconds": self.seconds, "last_loss": self.last_loss,
                "skipped_images": self.skipped_images,
                "backbone": self.parts.backbone.state_dict(), "head": self.parts.head.state_dict(),
                "classifier": self.classifier.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "loader_generator": self.loader_generator.get_state(),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.parts.backbone.load_state_dict(state["backbone"])
        self.parts.head.load_state_dict(state["head"])
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.loader_generator.set_state(state["loader_generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.seconds, self.last_loss = float(state["seconds"]), float(state["last_loss"])
        self.skipped_images = int(state.get("skipped_images", 0))

    # ------------------------------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.parts.dataset, batch_size=self.config.batch_size, shuffle=True, drop_last=True,
            num_workers=self.config.num_workers, generator=self.loader_generator, collate_fn=collate_readable,
            pin_memory=self.device.type == "cuda")

    def total_steps(self) -> int:
        total = self.config.epochs * (len(self.parts.dataset) // self.config.batch_size)
        return min(total, self.config.max_steps) if self.config.max_steps is not None else total

    def _set_lr(self) -> float:
        factor = lr_factor(self.step, self.epoch, self.total_steps(), self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.opt_config.lr * factor * group["scale"]
        return self.opt_config.lr * factor

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        parts = self.parts
        # uint8 goes to the device first (4x fewer bytes than float): flip, degradation and quality run there.
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        lr_mask = torch.zeros(images.shape[0], dtype=torch.bool, device=self.device)
        if self.config.hflip > 0:
            flip = (torch.rand(images.shape[0], generator=self.generator) < self.config.hflip).to(self.device)
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        for degradation in parts.degradations:
            out = degradation(images, self.generator)
            images, lr_mask = out.images, lr_mask | out.lr_mask.to(self.device)
        estimator, quality = parts.quality, None
        from_embeddings = getattr(estimator, "uses_embeddings", False)
        if estimator is not None and not from_embeddings:
            quality = estimator(images, lr_mask=lr_mask)
        embeddings = parts.backbone(to_network_input(images))
        if estimator is not None and from_embeddings:
            quality = estimator(images, lr_mask=lr_mask, embeddings=embeddings)
        logits = parts.head(self.classifier(embeddings), labels, quality)
        loss = F.cross_entropy(logits, labels)
        extra = parts.head.extra_loss() if hasattr(parts.head, "extra_loss") else None
        if extra is not None:
            loss = loss + extra
        if not torch.isfinite(loss):
            raise LrfrError(f"training stopped at step {self.step} (epoch {self.epoch + 1}): the loss is {loss.item()}. "
                            "Lower train.optimizer.lr or add warm-up (train.warmup_steps); the last good checkpoint "
                            "is kept in the run directory.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(parts.backbone.parameters(), self.config.grad_clip)
        self.optimizer.step()
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return loss.item(), accuracy

    def fit(self, run_dir: pathlib.Path, *, progress: bool = True) -> dict[str, Any]:
        """Train the remaining epochs; checkpoint after each; return the training summary."""
        config = self.config
        steps_per_epoch = len(self.parts.dataset) // config.batch_size
        if steps_per_epoch == 0:
            raise LrfrError(f"the training set has {len(self.parts.dataset)} images, fewer than one batch "
                            f"(train.batch_size = {config.batch_size}). Lower train.batch_size or use more data.")
        total = self.total_steps()
        metrics_path = run_dir / "metrics.jsonl"
        self.parts.backbone.train()
        self.parts.head.train()
        bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step", disable=not progress,
                   dynamic_ncols=True)
        try:
            while self.epoch < config.epochs and self.step < total:
                start = time.perf_counter()
                for images, labels, skipped in self._loader():
                    if self.step >= total:
                        break
                    self.skipped_images += skipped
                    if images is None or images.shape[0] < 2:
                        continue
                    lr = self._set_lr()
                    loss, accuracy = self.train_step(images, labels)
                    self.step += 1
                    self.last_loss = loss
                    bar.update(1)
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.3g}")
                    if self.step % config.log_every == 0 or self.step == total:
                        record = {"step": self.step, "epoch": self.epoch + 1, "loss": loss, "train_accuracy": accuracy,
                                  "lr": lr}
                        with metrics_path.open("a", encoding="utf-8") as fh:
                            fh.write(json.dumps(record) + "\n")
                self.seconds += time.perf_counter() - start
                self.epoch += 1
                save_checkpoint(run_dir / "checkpoint.pt", self.state_dict())
                log.info("epoch %d/%d done: step %d, loss %.4f", self.epoch, config.epochs, self.step, self.last_loss)
        finally:
            bar.close()
        images_seen = self.step * config.batch_size
        return {"epochs": self.epoch, "steps": self.step, "final_loss": self.last_loss,
                "train_seconds": round(self.seconds, 2),
                "images_per_second": round(images_seen / self.seconds, 1) if self.seconds > 0 else math.nan,
                "num_classes": self.parts.dataset.num_classes, "num_images": len(self.parts.dataset),
                "skipped_images": self.skipped_images}
