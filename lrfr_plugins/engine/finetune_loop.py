"""The fine-tuning loop skeleton the built-in finetuners share: a fixed number of optimiser steps over batches that
restart with a new pass over the data when used up.

What a finetuner brings is how a pass orders its batches and what one batch's loss is; the loop does the rest the
same way for all: the progress bar, the stop on a non-finite loss, an optional learning-rate schedule, and the stop
when a whole pass gives nothing to train on (every image unreadable).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..errors import DataError
from .optim import check_finite_loss

_END = object()


def optimise(optimizer: torch.optim.Optimizer, steps: int, passes: Callable[[int], Iterable[Any]],
             batch_loss: Callable[[Any], torch.Tensor | dict[str, torch.Tensor] | None], *, name: str, fix: str,
             progress: bool = True, lr_at: Callable[[int], float] | None = None) -> tuple[list[float], int]:
    """Take ``steps`` optimiser steps; return every step's loss and the number of passes started.

    ``passes(epoch)`` gives the batches of one pass over the data (called lazily, when the previous pass is used
    up, so its random draws happen where a hand-written loop would draw them). ``batch_loss(batch)`` returns the
    loss tensor, a dict with it under ``"loss"`` beside other tensors to show on the bar, or None to skip a batch
    that holds too few readable images. ``lr_at(step)``, when given, sets every group's learning rate before the
    step. A non-finite loss raises :class:`~lrfr_plugins.errors.NonFiniteLossError` naming ``name``, the step and
    ``fix``.
    """
    losses: list[float] = []
    epoch, batches, trained_this_pass = 0, iter(()), True
    bar = tqdm(total=steps, desc=name, unit="step", disable=not progress)
    try:
        while len(losses) < steps:
            batch = next(batches, _END)
            if batch is _END:
                if not trained_this_pass:
                    raise DataError(f"{name}: a whole pass over the data gave no batch to train on (every image of "
                                    "each batch unreadable, or too few per batch). Check the data, or turn "
                                    "data.params.skip_corrupt off to see the first bad image.")
                batches, trained_this_pass = iter(passes(epoch)), False
                epoch += 1
                continue
            out = batch_loss(batch)
            if out is None:
                continue
            parts = out if isinstance(out, dict) else {"loss": out}
            loss = parts["loss"]
            check_finite_loss(loss, lambda value: f"{name}: the loss is {value} at step {len(losses) + 1}. {fix}")
            if lr_at is not None:
                lr = lr_at(len(losses))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            trained_this_pass = True
            bar.update(1)
            bar.set_postfix({key: f"{value.item():.4f}" for key, value in parts.items()})
    finally:
        bar.close()
    return losses, epoch
