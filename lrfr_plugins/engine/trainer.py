"""The training loop: cross-resolution batches -> backbone -> classifier -> margin head -> cross-entropy.

It checkpoints atomically at every epoch end and, with ``checkpoint_every``, every N steps; a checkpoint holds
the model, head, classifier, optimizer, gradient scaler, the position in the epoch and every RNG state, and the
batch order is a pure function of (seed, epoch), so a run killed at any point continues exactly where its last
checkpoint was written.

A stochastic head (``Head.stochastic``) draws from ``head_generator``, on the training device, seeded from the run
seed and distinct per rank and checkpointed like the others. The recipe's quality estimator is only used (and
only called) when the head declares ``needs_quality``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..errors import LrfrError
from ..ops.preprocess import to_network_input
from .batches import WithIndex, collate_indexed, hflip
from .config import OptimizerConfig, TrainConfig
from .checkpoint import save_checkpoint
from . import distributed as D
from .optim import build_optimizer, check_finite_loss, lr_factor
from .partial_fc import PartialFC
from .quality import estimate_quality
from .samplers import ShuffledBatchSampler

log = logging.getLogger("lrfr")


@dataclasses.dataclass
class TrainComponents:
    backbone: torch.nn.Module
    head: torch.nn.Module
    dataset: Any
    degradations: list[Any]
    quality: Any | None


class Trainer:
    """Owns the optimisation state of one run; ``state_dict`` is everything needed to continue it."""

    def __init__(self, parts: TrainComponents, config: TrainConfig, optimizer: OptimizerConfig,
                 device: torch.device, seed: int):
        self.parts, self.config, self.opt_config, self.device, self.seed = parts, config, optimizer, device, seed
        self.rank, self.world_size = D.rank(), D.world_size()
        # class centres sharded over ranks (the whole matrix in one process), the head and the cross-entropy; none for
        # data without identities (label-free fine-tuning only: the runner refuses to train on it)
        self.classifier = PartialFC(parts.dataset.num_classes, parts.backbone.embedding_size,
                                    sample_rate=config.sample_rate) if parts.dataset.num_classes > 0 else None
        parts.backbone.to(device)
        if config.channels_last:
            parts.backbone.to(memory_format=torch.channels_last)
        parts.head.to(device)
        if self.classifier is not None:
            self.classifier.to(device)
        backbone = parts.backbone
        if D.is_distributed():  # DDP averages the backbone's gradients; the centre shards need no sync
            backbone = torch.nn.parallel.DistributedDataParallel(
                backbone, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        groups = [{"params": list(parts.backbone.parameters()) + list(parts.head.parameters()), "scale": 1.0},
                  {"params": list(self.classifier.parameters()) if self.classifier is not None else [],
                   "scale": config.embedding_lr_scale}]
        self.optimizer = build_optimizer(groups, optimizer)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.forward_backbone = torch.compile(backbone) if config.compile else backbone
        #: the estimator the head reads; None for a head without needs_quality, so an unused one is never called
        self.quality = parts.quality if getattr(parts.head, "needs_quality", False) else None
        #: quality of each undegraded training image, once computed (NaN: not yet); see Quality.cacheable
        cache = getattr(self.quality, "cacheable", False) and getattr(parts.dataset, "fixed_items", False)
        self.quality_cache = torch.full((len(parts.dataset),), float("nan")) if cache else None
        self.generator = torch.Generator().manual_seed(seed + self.rank)  # each rank flips and degrades its own
        self.sample_generator = torch.Generator().manual_seed(seed + 7919 * (self.rank + 1))  # Partial FC negatives
        #: what a stochastic head draws from (on the device, where it draws); the classifier hands it to the head
        self.head_generator = None
        if getattr(parts.head, "stochastic", False):
            self.head_generator = torch.Generator(device=device).manual_seed(seed + 104729 * (self.rank + 1))
            if self.classifier is not None:
                self.classifier.head_generator = self.head_generator
        self.epoch = 0  # epochs finished
        self.batch_in_epoch = 0  # batches of the current epoch already drawn (mid-epoch checkpoints)
        self.step = 0
        self.seconds = 0.0
        self.last_loss = float("nan")
        self.skipped_images = 0

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "seconds": self.seconds, "last_loss": self.last_loss, "skipped_images": self.skipped_images,
                "backbone": self.parts.backbone.state_dict(), "head": self.parts.head.state_dict(),
                "classifier": self.classifier.state_dict() if self.classifier is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "generator": self.generator.get_state(),
                "sample_generator": self.sample_generator.get_state(), "torch_rng": torch.get_rng_state(),
                "head_generator": self.head_generator.get_state() if self.head_generator is not None else None,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state.get("world_size", 1)) != self.world_size:
            raise LrfrError(f"the checkpoint was written by {state.get('world_size', 1)} processes and this run has "
                            f"{self.world_size}: resume with the same number of processes (each holds its own class "
                            "centres and optimizer state).")
        self.parts.backbone.load_state_dict(state["backbone"])
        self.parts.head.load_state_dict(state["head"])
        if self.classifier is not None:
            self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        if "sample_generator" in state:
            self.sample_generator.set_state(state["sample_generator"])
        if self.head_generator is not None and state.get("head_generator") is not None:  # older: keep the seeded one
            try:
                self.head_generator.set_state(state["head_generator"])
            except RuntimeError:  # a CPU and a CUDA generator's states differ in size: written on another device
                log.warning("the checkpoint's head generator comes from another device type than %s: the stochastic "
                            "head draws afresh from the run seed, so the resumed run is not an exact continuation",
                            self.device.type)
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.batch_in_epoch = int(state.get("batch_in_epoch", 0))
        self.seconds, self.last_loss = float(state["seconds"]), float(state["last_loss"])
        self.skipped_images = int(state.get("skipped_images", 0))

    # ------------------------------------------------------------------------------------------ loop
    def _loader(self) -> torch.utils.data.DataLoader:
        """This epoch's batches from where the run stands (a resumed run skips the batches it trained on)."""
        sampler = ShuffledBatchSampler(len(self.parts.dataset), self.config.batch_size, seed=self.seed,
                                       epoch=self.epoch, start_batch=self.batch_in_epoch, rank=self.rank,
                                       world_size=self.world_size)
        return torch.utils.data.DataLoader(
            WithIndex(self.parts.dataset), batch_sampler=sampler, num_workers=self.config.num_workers,
            collate_fn=collate_indexed, pin_memory=self.device.type == "cuda")

    def steps_per_epoch(self) -> int:
        return len(self.parts.dataset) // (self.config.batch_size * self.world_size)

    def total_steps(self) -> int:
        total = self.config.epochs * self.steps_per_epoch()
        return min(total, self.config.max_steps) if self.config.max_steps is not None else total

    def _set_lr(self) -> float:
        factor = lr_factor(self.step, self.epoch, self.total_steps(), self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = self.opt_config.lr * factor * group["scale"]
        return self.opt_config.lr * factor

    def _image_quality(self, images: torch.Tensor, lr_mask: torch.Tensor, changed: torch.Tensor,
                       indices: torch.Tensor | None):
        """The estimator's values for the batch; with a cache, only changed or never-seen images are computed."""
        estimator = self.quality
        if self.quality_cache is None or indices is None:
            return estimate_quality(estimator, images, lr_mask)
        quality = self.quality_cache[indices].clone()
        degraded = changed.cpu()
        todo = degraded | torch.isnan(quality)
        if todo.any():
            rows = todo.to(images.device)
            quality[todo] = estimate_quality(estimator, images[rows], lr_mask[rows]).float().cpu()
            keep = todo & ~degraded
            self.quality_cache[indices[keep]] = quality[keep]
        return quality.to(images.device)

    def _prepare(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        """uint8 batch to the device first (4x fewer bytes than float), then flip, degradations, image quality."""
        parts = self.parts
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        lr_mask = torch.zeros(images.shape[0], dtype=torch.bool, device=self.device)
        changed = lr_mask.clone()
        if self.config.hflip > 0:
            flip = (torch.rand(images.shape[0], generator=self.generator) < self.config.hflip).to(self.device)
            images = hflip(images, flip)
        for degradation in parts.degradations:
            out = degradation(images, self.generator)
            images, lr_mask = out.images, lr_mask | out.lr_mask.to(self.device)
            changed = changed | out.changed.to(self.device)
        quality = None
        if self.quality is not None and not getattr(self.quality, "uses_embeddings", False):
            quality = self._image_quality(images, lr_mask, changed, indices)
        return images, labels, lr_mask, quality

    def train_step(self, images: torch.Tensor, labels: torch.Tensor,
                   indices: torch.Tensor | None = None) -> tuple[float, float]:
        """One optimisation step on a uint8 batch; ``indices`` (dataset rows) enable the quality cache."""
        parts = self.parts
        images, labels, lr_mask, quality = self._prepare(images, labels, indices)
        inputs = to_network_input(images)
        if self.config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            embeddings = self.forward_backbone(inputs)
        embeddings = embeddings.float()
        if self.quality is not None and quality is None:  # an estimator that reads the embeddings
            quality = estimate_quality(self.quality, images, lr_mask, embeddings)
        # cosine to the (sampled) centres, margin head, cross-entropy over all ranks' classes, head.extra_loss()
        loss = self.classifier(embeddings, labels, parts.head, quality, generator=self.sample_generator)
        check_finite_loss(loss, self._non_finite_message)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.world_size > 1:  # a head's own parameters see every rank's shard: sum their gradients
            for p in parts.head.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(parts.backbone.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item(), self.classifier.last_accuracy

    def _non_finite_message(self, loss: float) -> str:
        """Promise a checkpoint to resume from only when one is on disk: a loss that diverges in the first epoch
        leaves none, and resuming with the same settings would diverge again."""
        stopped = f"training stopped at step {self.step + 1} (epoch {self.epoch + 1}): the loss is {loss}."
        fixes = f"lower train.optimizer.lr (now {self.opt_config.lr:g}), add warm-up (train.warmup_steps)"
        fixes += ", turn train.grad_clip on" if not self.config.grad_clip else ""
        path = getattr(self, "checkpoint_path", None)
        state = None
        if path is not None and path.is_file():
            try:  # only its position is read; mmap leaves the tensors on disk
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # a checkpoint that cannot be read is no checkpoint to offer
                state = None
        if not isinstance(state, dict):
            return (f"{stopped} No checkpoint was written before that, so there is nothing to resume: {fixes}, check "
                    "the training data and the head's parameters, then start the run again (--overwrite replaces "
                    "this one).")
        return (f"{stopped} The last good checkpoint, {path} (step {state.get('step')}, epoch {state.get('epoch')}), "
                f"is kept. To continue from it, {fixes} in {path.parent / 'recipe.resolved.yaml'} and run 'lrfr run "
                f"--resume {path.parent}' (the same settings would diverge again); or start again with --overwrite.")

    def fit(self, run_dir: pathlib.Path, *, progress: bool = True,
            on_epoch_end: Callable[[int], dict[str, Any] | None] | None = None) -> dict[str, Any]:
        """Train the remaining steps; checkpoint every ``checkpoint_every`` steps and after each epoch.

        ``on_epoch_end(epoch)`` (e.g. periodic evaluation) may return scalars to log with that epoch.
        """
        config = self.config
        if self.steps_per_epoch() == 0 and config.epochs > 0:
            raise LrfrError(f"the training set has {len(self.parts.dataset)} images, fewer than one batch "
                            f"(train.batch_size = {config.batch_size}). Lower train.batch_size or use more data.")
        total = self.total_steps()
        main = self.rank == 0
        progress = progress and main
        log_file = MetricsLog(run_dir, tensorboard=config.tensorboard, enabled=main)
        checkpoint = self.checkpoint_path = run_dir / checkpoint_name(self.rank)
        self.parts.backbone.train()
        self.parts.head.train()
        bar = tqdm(total=total, initial=min(self.step, total), desc="train", unit="step", disable=not progress,
                   dynamic_ncols=True)
        try:
            while self.epoch < config.epochs and self.step < total:
                start = time.perf_counter()
                for images, labels, indices, skipped in self._loader():
                    if self.step >= total:
                        break
                    self.batch_in_epoch += 1
                    self.skipped_images += skipped
                    if images is None or images.shape[0] < 2:
                        continue
                    lr = self._set_lr()
                    loss, accuracy = self.train_step(images, labels, indices)
                    self.step += 1
                    self.last_loss = loss
                    bar.update(1)
                    bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", lr=f"{lr:.3g}")
                    if self.step % config.log_every == 0 or self.step == total:
                        log_file.write({"step": self.step, "epoch": self.epoch + 1, "loss": loss,
                                        "train_accuracy": accuracy, "lr": lr})
                    if config.checkpoint_every and self.step % config.checkpoint_every == 0 \
                            and self.batch_in_epoch < self.steps_per_epoch():
                        self.seconds += time.perf_counter() - start
                        start = time.perf_counter()
                        save_checkpoint(checkpoint, self.state_dict())
                self.seconds += time.perf_counter() - start
                if self.batch_in_epoch >= self.steps_per_epoch():
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if on_epoch_end is not None and main and config.eval_every and self.epoch % config.eval_every == 0:
                        scalars = on_epoch_end(self.epoch)
                        if scalars:
                            log_file.write({"step": self.step, "epoch": self.epoch, **scalars})
                        self.parts.backbone.train()
                save_checkpoint(checkpoint, self.state_dict())
                log.info("epoch %d/%d: step %d, loss %.4f", self.epoch, config.epochs, self.step, self.last_loss)
        finally:
            bar.close()
            log_file.close()
        images_seen = self.step * config.batch_size
        return {"epochs": self.epoch, "steps": self.step,  # None, not NaN, without a step: metrics.json stays JSON
                "final_loss": self.last_loss if self.step else None, "train_seconds": round(self.seconds, 2),
                "images_per_second": round(images_seen / self.seconds, 1) if self.seconds > 0 else None,
                "num_classes": self.parts.dataset.num_classes, "num_images": len(self.parts.dataset),
                "skipped_images": self.skipped_images, "amp": config.amp}


def checkpoint_name(rank: int) -> str:
    """checkpoint.pt (rank 0: what eval and export read); checkpoint-rank{r}.pt holds rank r's centres and state."""
    return "checkpoint.pt" if rank == 0 else f"checkpoint-rank{rank}.pt"


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard scalars (when the package is installed and not switched off)."""

    def __init__(self, run_dir: pathlib.Path, *, tensorboard: bool, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl" if enabled else None
        self.writer = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:  # ranks other than 0 do not log
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
