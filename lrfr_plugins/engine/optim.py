"""What every optimisation loop of the host shares (the trainer and the finetuners): the optimizer from its
settings, the learning-rate schedule and the stop on a non-finite loss."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Callable

import torch

from ..errors import NonFiniteLossError
from .config import OptimizerConfig, TrainConfig


def build_optimizer(params: Iterable[Any], config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over ``params``: tensors, or param-group dicts as torch takes them."""
    params = list(params)
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def schedule_factor(step: int, total_steps: int, *, schedule: str = "multistep", warmup_steps: int = 0,
                    epoch: int = 0, milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Learning-rate factor at ``step``: linear warm-up over ``warmup_steps``, then x ``gamma`` per milestone epoch
    reached (multistep), a cosine decay to 0, or arcface_torch's polynomial (power 1: linear) decay to 0.

    A pure function of the position, so a resumed run follows the same schedule without saved scheduler state.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    progress = min(1.0, max(0, step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "polynomial":
        return warm * (1.0 - progress)
    return warm * gamma ** sum(1 for m in milestones if epoch >= m)


def lr_factor(step: int, epoch: int, total_steps: int, config: TrainConfig) -> float:
    """:func:`schedule_factor` with the recipe's ``train`` settings."""
    return schedule_factor(step, total_steps, schedule=config.schedule, warmup_steps=config.warmup_steps,
                           epoch=epoch, milestones=config.milestones, gamma=config.gamma)


def check_finite_loss(loss: torch.Tensor, message: str | Callable[[float], str]) -> None:
    """Stop with a :class:`~lrfr_plugins.errors.NonFiniteLossError` when ``loss`` is NaN or infinite; ``message``
    (or ``message(loss)``, built only then) says where it happened and what to change."""
    if not torch.isfinite(loss):
        value = loss.item()
        raise NonFiniteLossError(message(value) if callable(message) else message)
