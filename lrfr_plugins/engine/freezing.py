"""Freezing part of a backbone for fine-tuning: parameters by name prefix, BatchNorm statistics by choice.

Fine-tuning batches are small and, for cross-resolution losses, mixed-resolution: BatchNorm statistics updated on them
drift away from the full-resolution statistics the model was trained with, so the finetuners keep them frozen by
default (the BatchNorm modules stay in eval mode while the rest trains).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import ParamsError, did_you_mean


def _matches(name: str, prefix: str) -> bool:
    prefix = prefix.rstrip(".")
    return name == prefix or name.startswith(prefix + ".")


def _prefixes_of(names: list[str]) -> list[str]:
    """Every dotted prefix of the parameter names ("layer1", "layer1.0", "layer1.0.conv1.weight", ...)."""
    parts = [name.split(".") for name in names]
    return sorted({".".join(p[:k]) for p in parts for k in range(1, len(p) + 1)})


def freeze_prefixes(backbone: torch.nn.Module, prefixes: list[str]
                    ) -> tuple[list[torch.nn.Parameter], list[torch.nn.Module]]:
    """Validate the prefixes against ``named_parameters``; return the parameters and modules they freeze.

    An unknown prefix is a :class:`~lrfr_plugins.errors.ParamsError` on the ``freeze`` parameter, with the closest
    name of the backbone."""
    names = [name for name, _ in backbone.named_parameters()]
    unknown = [p for p in prefixes if not any(_matches(n, p) for n in names)]
    if unknown:
        tops = sorted({n.split(".")[0] for n in names})
        hint = "".join(did_you_mean(p, _prefixes_of(names)) for p in unknown[:1])
        problem = (f"{unknown} match no parameter of the backbone; prefixes are dotted parameter-name prefixes such "
                   f"as {tops[:12]} (see backbone.named_parameters()).{hint}")
        raise ParamsError(f"freeze: {problem}", [("freeze", problem)])
    params = [t for n, t in backbone.named_parameters() if any(_matches(n, p) for p in prefixes)]
    modules = [m for n, m in backbone.named_modules() if n and any(_matches(n, p) for p in prefixes)]
    return params, modules


def check_freeze(backbone: torch.nn.Module, prefixes: list[str]) -> None:
    """What a finetuner's ``check`` asks of its ``freeze`` list: every prefix names part of the backbone, and some
    parameter is left to train."""
    frozen = {id(t) for t in freeze_prefixes(backbone, prefixes)[0]}
    if not any(t.requires_grad and id(t) not in frozen for t in backbone.parameters()):
        problem = f"{list(prefixes)} freezes every parameter of the backbone: leave some part of it to train."
        raise ParamsError(f"freeze: {problem}", [("freeze", problem)])


def batchnorm_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Every BatchNorm layer of ``module`` (those whose running statistics a train-mode forward would update)."""
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def training_mode(backbone: torch.nn.Module, frozen: list[torch.nn.Module], frozen_params: list[torch.nn.Parameter]
                  ) -> Iterator[list[torch.nn.Parameter]]:
    """``backbone`` in train mode with ``frozen`` modules in eval mode and ``frozen_params`` without gradients, for
    the duration; yields the parameters left to train. Modes and ``requires_grad`` flags are restored afterwards."""
    saved_flags = [(t, t.requires_grad) for t in backbone.parameters()]
    was_training = backbone.training
    frozen_ids = {id(t) for t in frozen_params}
    try:
        for t in frozen_params:
            t.requires_grad_(False)
        backbone.train()
        for m in frozen:
            m.eval()
        yield [t for t in backbone.parameters() if t.requires_grad and id(t) not in frozen_ids]
    finally:
        for t, flag in saved_flags:
            t.requires_grad_(flag)
        backbone.train(was_training)
