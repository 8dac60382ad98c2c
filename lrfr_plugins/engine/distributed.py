"""Process-group helpers for multi-process training (torchrun) and the gathers Partial FC needs.

Start a run with ``torchrun --nproc_per_node N -m lrfr_plugins.cli train ...``: torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT, and :func:`init_distributed` joins the group from them (``env://``),
with NCCL when CUDA is available and gloo otherwise. Without those variables (a plain ``python`` run) nothing is
initialised and every helper behaves as world size 1, rank 0: collectives become no-ops or identities, so one
code path serves both.

Gathers concatenate along dim 0 in rank order and accept a different row count per rank (a rank whose batch lost
unreadable images): the counts are exchanged first (:func:`gather_sizes`), rows are padded to the largest count
for the collective and trimmed afterwards.

:func:`all_gather_with_grad` is differentiable. Its backward sums, over all ranks, the gradient each rank's graph
produced for a rank's rows and hands that sum to the rank that owns the rows, multiplied by ``grad_scale``. With
``grad_scale = 1`` this is the true gradient of the *sum* of the ranks' losses. Partial FC uses
``grad_scale = world_size`` (as arcface_torch's ``AllGatherFunc`` does) because DDP then *averages* the backbone
gradients over ranks: the net result is the gradient of the one global-batch loss, as in a single process.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "all_gather_with_grad",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "device_for_rank",
    "gather_sizes",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "local_rank",
    "rank",
    "world_size",
]


# ------------------------------------------------------------------------------------------ group lifecycle
def is_distributed() -> bool:
    """True when a process group is initialised (whatever its size)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its node (torchrun's LOCAL_RANK; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed(backend: str | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment; return whether one is initialised.

    Does nothing (returns False) when RANK / WORLD_SIZE are unset (a plain process), so ``torchrun --nproc_per_node
    1`` does run DDP with one process; returns True at once
    when a group already exists. ``backend`` defaults to ``nccl`` with CUDA and ``gloo`` without; with NCCL the
    current CUDA device is set to LOCAL_RANK first. MASTER_ADDR / MASTER_PORT must be set (torchrun does).
    """
    if is_distributed():
        return True
    if not dist.is_available():
        return False
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env or int(env["WORLD_SIZE"]) < 1:
        return False
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in env]
    if missing:
        raise RuntimeError(f"RANK and WORLD_SIZE are set but {', '.join(missing)} is not: start multi-process "
                           "training with torchrun, which sets all of them")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, init_method="env://", rank=int(env["RANK"]),
                            world_size=int(env["WORLD_SIZE"]), timeout=datetime.timedelta(seconds=timeout_s))
    return True


def cleanup() -> None:
    """Leave and destroy the process group (no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if not is_distributed():
        return
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


# ------------------------------------------------------------------------------------------------- gathers
def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's row count, in rank order (``[n]`` without a group). A collective: all ranks must call it."""
    if world_size() == 1:
        return [int(n)]
    if is_distributed() and dist.get_backend() == "nccl":
        device = device_for_rank()
    local = torch.tensor([int(n)], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    tensor = tensor.contiguous()
    if tensor.shape[0] == rows:
        return tensor
    pad = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, pad], 0)


def _gather_padded(tensor: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    padded = _pad_rows(tensor, max(sizes))
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)], 0)


def all_gather(tensor: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order; no gradient. ``sizes`` from
    :func:`gather_sizes` saves a collective when known; otherwise the row counts are exchanged first."""
    if world_size() == 1:
        return tensor
    sizes = list(sizes) if sizes is not None else gather_sizes(tensor.shape[0], tensor.device)
    return _gather_padded(tensor.detach(), sizes)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...], grad_scale: float) -> torch.Tensor:
        ctx.sizes, ctx.grad_scale = sizes, grad_scale
        return _gather_padded(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        sizes, me = ctx.sizes, rank()
        rows = max(sizes)
        # Re-pad each rank's block of the (sum(sizes), ...) gradient to `rows`, then sum the blocks over ranks.
        blocks = torch.split(grad.contiguous(), list(sizes), 0)
        padded = torch.stack([_pad_rows(block, rows) for block in blocks], 0)  # (W, rows, ...)
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(padded[0])
            dist.reduce_scatter_tensor(mine, padded.reshape(-1, *padded.shape[2:]), op=dist.ReduceOp.SUM)
        else:  # gloo has no reduce_scatter: all-reduce everything and keep our block
            dist.all_reduce(padded, op=dist.ReduceOp.SUM)
            mine = padded[me]
        mine = mine[:sizes[me]]
        if ctx.grad_scale != 1.0:
            mine = mine * ctx.grad_scale
        return mine, None, None


def all_gather_with_grad(tensor: torch.Tensor, sizes: Sequence[int] | None = None, *,
                         grad_scale: float = 1.0) -> torch.Tensor:
    """Differentiable :func:`all_gather`: the gradient of a rank's rows, summed over the ranks' graphs and times
    ``grad_scale``, flows back to that rank's ``tensor`` (see the module docstring). Identity without a group."""
    if world_size() == 1:
        return tensor
    sizes = tuple(sizes) if sizes is not None else tuple(gather_sizes(tensor.shape[0], tensor.device))
    if not tensor.requires_grad:
        return _gather_padded(tensor, sizes)
    return _AllGatherWithGrad.apply(tensor, sizes, float(grad_scale))


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor:
    """The mean of a scalar or tensor over ranks (for logging); the value itself without a group."""
    tensor = torch.as_tensor(value, dtype=torch.float64).clone() if not torch.is_tensor(value) \
        else value.detach().clone()
    if world_size() == 1:
        return tensor
    if dist.get_backend() == "nccl":
        tensor = tensor.to(device_for_rank())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / world_size()
