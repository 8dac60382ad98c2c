"""Partial FC: class centres sharded over ranks, a margin head, and a cross-entropy over the full class set.

Follows arcface_torch's ``PartialFC_V2`` (REFERENCE §0, "Partial FC v2"), written for the plugin head contract
``head(cosine (N, C_local), labels (N,) with -1 = class on another rank, quality (N,) or None)``.

**Shards.** With C classes over W ranks, rank r owns the contiguous classes [start_r, end_r) with
``num_local = C // W + (r < C % W)`` and ``start_r = (C // W) * r + min(r, C % W)``: the first ``C % W`` ranks
get one class more (arcface_torch's split). Its centres are ``weight`` (num_local, D), initialised N(0, 0.01).

**Forward** (every rank, same step):

1. all-gather the embeddings (differentiable), labels and quality (differentiable when it carries a gradient,
   MagFace) in rank order -> N = B_0 + ... + B_{W-1} rows (ranks may differ in B);
2. labels of classes this rank owns become ``label - start``, the others -1;
3. ``sample_rate < 1``: keep every class of this shard that is a label in the gathered batch, plus random other
   classes of the shard up to ``ceil(sample_rate * num_local)`` in all (all positives when they alone exceed it);
   the kept classes are sorted and labels remapped to positions in that subset (:func:`sample_classes`). The
   random choice comes from ``generator`` when one is passed to ``forward`` (deterministic given its state), else
   from this module's own CPU generator seeded ``seed + rank`` at construction (deterministic for a run, but not
   in ``state_dict``: a resumed run draws other negatives);
4. ``cosine = normalize(emb) @ normalize(weight_sampled).T`` in float32, clamped to [-1, 1];
5. ``logits = head(cosine, local_labels, gathered_quality)``: every rank's head sees the same N rows and the same
   quality, so batch statistics (AdaFace's EMA mean/std of the norms) are those of the global batch and every
   rank's buffers update identically. A head with ``stochastic = True`` is called with ``generator=`` as well:
   ``head_generator`` when one is passed to ``forward``, else the module's ``head_generator`` attribute (the
   trainer sets it to its own checkpointed generator, so finetuners calling the classifier continue that stream),
   else one made on first use on cosine's device, seeded ``sample_seed + 104729 * (rank + 1)`` (not in
   ``state_dict``);
6. the softmax cross-entropy over the full (or sampled) class set split over ranks, averaged over the N rows:
   the row max is all-reduced (MAX), the sum of exponentials (SUM) and the target logit comes from the rank that
   owns it, as arcface_torch's ``DistCrossEntropy``; with world size 1 it is ``F.cross_entropy`` itself, so a
   single process gives exactly the plain trainer's loss;
7. plus ``head.extra_loss()`` (MagFace's lambda_g * mean g(a)), see below.

**Gradients.** Every rank returns the same loss value (the global-batch loss). The gather's backward sums the
ranks' contributions for each rank's rows and multiplies by W (arcface_torch's convention), so after DDP
*averages* backbone gradients over ranks they equal the single-process gradient of the global batch. Use DDP (or
all-reduce the backbone and head gradients and divide by W) and do **not** wrap this module in DDP: each rank's
``weight.grad`` is already exactly its shard of the single-process gradient.

**extra_loss.** The regulariser is computed from the gathered rows on every rank, identically, so its gradient
would reach each row W times. It is added as ``extra / W`` plus ``(extra - extra / W).detach()``: the loss *value*
is unchanged (equal to the single-process value), its gradient is divided by W, and after the gather's sum over
ranks (times W) and DDP's mean it is counted exactly once.

**Checkpoints.** ``state_dict()`` holds this rank's shard under ``weight`` (with one process: the whole matrix).
The trainer writes one checkpoint per rank (``checkpoint.pt`` on rank 0, ``checkpoint-rank{r}.pt``), as
arcface_torch's ``checkpoint_gpu_{rank}.pt``, so C x D never has to fit on one process and the momentum of each
shard stays with it; resuming needs the same world size. ``gather_full_weight()`` / ``load_full_weight(full)``
and ``gather_rows`` / ``shard_rows`` convert between a full matrix and the shards (e.g. to change world size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as D

__all__ = ["PartialFC", "dist_cross_entropy", "sample_classes", "shard_labels", "shard_range"]

_INIT_BLOCK = 4096  # rows per independently seeded block when a seed fixes the init (world-size independent)


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """[start, end) of the classes rank ``rank`` owns: contiguous, the first ``C % W`` ranks one class more."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if num_classes < world_size:
        raise ValueError(f"Partial FC needs at least one class per rank: {num_classes} classes, {world_size} ranks")
    base, extra = divmod(num_classes, world_size)
    start = base * rank + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_labels(labels: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Global labels -> this shard's: ``label - start`` for classes in [start, end), -1 for the others."""
    labels = labels.reshape(-1).long()
    owned = (labels >= start) & (labels < end)
    return torch.where(owned, labels - start, torch.full_like(labels, -1))


def num_sampled(num_local: int, sample_rate: float) -> int:
    """ceil(sample_rate * num_local), with a guard so that e.g. 0.1 * 30 gives 3, not 4."""
    return min(num_local, max(1, math.ceil(sample_rate * num_local - 1e-9)))


def sample_classes(local_labels: torch.Tensor, num_local: int, sample_rate: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose the shard's classes to score: every positive plus random negatives.

    Returns (index, labels): ``index`` (K,), sorted shard-local class indices, K = max(#positives,
    ceil(sample_rate * num_local)); ``labels`` maps each row's shard-local label to its position in ``index``
    (-1 stays -1). ``sample_rate >= 1`` keeps every class (index = arange). Negatives are the top-scoring classes
    under ``torch.rand(num_local, generator=generator)`` (positives scored 2.0), as arcface_torch samples.
    """
    local_labels = local_labels.reshape(-1).long()
    device = local_labels.device
    if sample_rate >= 1:
        return torch.arange(num_local, device=device), local_labels
    positive = torch.unique(local_labels[local_labels >= 0])
    k = max(num_sampled(num_local, sample_rate), positive.numel())
    gen_device = generator.device if generator is not None else device
    scores = torch.rand(num_local, generator=generator, device=gen_device).to(device)
    scores[positive] = 2.0
    index = torch.topk(scores, k, sorted=False).indices.sort().values
    owned = local_labels >= 0
    remapped = torch.searchsorted(index, local_labels.clamp_min(0))
    return index, torch.where(owned, remapped, torch.full_like(local_labels, -1))


class _DistSoftmaxCE(torch.autograd.Function):
    """Mean softmax cross-entropy of logits whose columns are split over ranks (arcface_torch's DistCrossEntropy).

    Forward returns (the global loss, same on every rank; per-row flags: target logit = global maximum); backward
    gives each rank (softmax - onehot) / N for its own columns only.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor):
        import torch.distributed as dist

        logits = logits.float()
        n = logits.shape[0]
        row_max = logits.max(dim=1, keepdim=True).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = (logits - row_max).exp_()
        sum_exp = exp.sum(dim=1, keepdim=True)
        dist.all_reduce(sum_exp, op=dist.ReduceOp.SUM)
        rows = torch.nonzero(labels >= 0).squeeze(1)
        target = torch.zeros(n, 1, dtype=logits.dtype, device=logits.device)
        target[rows, 0] = logits[rows, labels[rows]]
        dist.all_reduce(target, op=dist.ReduceOp.SUM)
        exp.div_(sum_exp)  # this rank's columns of the global softmax
        ctx.save_for_backward(exp, labels, rows)
        per_row = sum_exp.log() + row_max - target  # -log softmax of the target, in log-sum-exp form
        correct = (target >= row_max).reshape(-1)  # the target is the global arg-max (ties count as correct)
        ctx.mark_non_differentiable(correct)
        return per_row.mean(), correct

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor, _grad_correct=None):
        softmax, labels, rows = ctx.saved_tensors
        grad = softmax.clone()
        grad[rows, labels[rows]] -= 1.0
        grad.mul_(grad_output / softmax.shape[0])
        return grad, None


def dist_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over columns split across ranks (labels -1 where another rank owns the target).

    With world size 1 it is exactly ``F.cross_entropy(logits, labels)``.
    """
    if D.world_size() == 1:
        return F.cross_entropy(logits, labels)
    return _DistSoftmaxCE.apply(logits, labels)[0]


def _scale_grad(value: torch.Tensor, factor: float) -> torch.Tensor:
    """``value`` in the forward pass, ``factor`` times its gradient in the backward pass."""
    scaled = value * factor
    return scaled + (value - scaled).detach()


class PartialFC(nn.Module):
    """Sharded normalised classifier + margin head + distributed cross-entropy: ``loss = pfc(emb, labels, head)``.

    ``rank`` / ``world_size`` default to the process group's (0 / 1 without one); other values may be given to
    build a shard offline (e.g. to convert checkpoints), but ``forward`` needs a matching process group.
    ``seed=None`` initialises this shard from the global torch RNG as N(0, 0.01), arcface_torch's init (so world
    size 1 reproduces a plain classifier bit for bit); an integer seed initialises the centres block-wise from that
    seed, so the full matrix is the same for every world size. See the module docstring for the algorithm,
    gradients and checkpoints.
    """

    def __init__(self, num_classes: int, embedding_size: int, *, sample_rate: float = 1.0,
                 rank: int | None = None, world_size: int | None = None, seed: int | None = None,
                 sample_seed: int = 0):
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.world_size = D.world_size() if world_size is None else int(world_size)
        self.rank = D.rank() if rank is None else int(rank)
        self.num_classes, self.embedding_size, self.sample_rate = int(num_classes), int(embedding_size), sample_rate
        self.start, self.end = shard_range(self.num_classes, self.world_size, self.rank)
        self.num_local = self.end - self.start
        self.weight = nn.Parameter(self._init_weight(seed))
        self.generator = torch.Generator().manual_seed(sample_seed + self.rank)
        self.sample_seed = int(sample_seed)
        #: the generator a stochastic head draws from (see the module docstring, step 5); the trainer sets it
        self.head_generator: torch.Generator | None = None
        #: shard-local indices of the classes scored in the last forward (None when sample_rate == 1)
        self.last_index: torch.Tensor | None = None
        #: fraction of the gathered batch whose target logit was the global maximum in the last forward
        self.last_accuracy: float = float("nan")

    def _init_weight(self, seed: int | None) -> torch.Tensor:
        if seed is None:
            return torch.empty(self.num_local, self.embedding_size).normal_(0, 0.01)
        out = torch.empty(self.num_local, self.embedding_size)
        first, last = self.start // _INIT_BLOCK, (self.end - 1) // _INIT_BLOCK
        for block in range(first, last + 1):
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + block)
            rows = torch.empty(_INIT_BLOCK, self.embedding_size).normal_(0, 0.01, generator=gen)
            lo, hi = max(self.start, block * _INIT_BLOCK), min(self.end, (block + 1) * _INIT_BLOCK)
            out[lo - self.start:hi - self.start] = rows[lo - block * _INIT_BLOCK:hi - block * _INIT_BLOCK]
        return out

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_size={self.embedding_size}, rank={self.rank}/"
                f"{self.world_size}, classes=[{self.start}, {self.end}), sample_rate={self.sample_rate}")

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, head: nn.Module,
                quality: torch.Tensor | None = None, *, generator: torch.Generator | None = None,
                head_generator: torch.Generator | None = None) -> torch.Tensor:
        """This rank's (B, D) raw embeddings, (B,) global labels and optional (B,) quality -> the global loss.

        ``generator`` draws the sampled negatives (CPU); ``head_generator`` is what a ``stochastic`` head draws from.
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_size:
            raise ValueError(f"PartialFC expects embeddings (B, {self.embedding_size}), got {tuple(embeddings.shape)}")
        labels = labels.reshape(-1)
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"got {labels.shape[0]} labels for {embeddings.shape[0]} embeddings")
        if quality is not None:
            quality = quality.reshape(-1)
        world = self.world_size
        if world != D.world_size():
            raise RuntimeError(f"PartialFC built for world size {self.world_size} runs in a process group of size "
                               f"{D.world_size()}; call lrfr_plugins.engine.distributed.init_distributed() first")
        if world > 1:
            sizes = D.gather_sizes(embeddings.shape[0], embeddings.device)
            embeddings = D.all_gather_with_grad(embeddings, sizes, grad_scale=world)
            labels = D.all_gather(labels, sizes)
            if quality is not None:
                quality = D.all_gather_with_grad(quality, sizes, grad_scale=world)
        local = shard_labels(labels, self.start, self.end)
        weight = self.weight
        self.last_index = None
        if self.sample_rate < 1:
            index, local = sample_classes(local, self.num_local, self.sample_rate,
                                          generator if generator is not None else self.generator)
            index = index.to(self.weight.device)
            self.last_index = index
            weight = self.weight[index]
        cosine = F.linear(F.normalize(embeddings.float()), F.normalize(weight.float())).clamp(-1.0, 1.0)
        if getattr(head, "stochastic", False):
            logits = head(cosine, local, quality, generator=self._head_generator(head_generator, cosine.device))
        else:
            logits = head(cosine, local, quality)
        if world == 1:
            loss = F.cross_entropy(logits, local)
            with torch.no_grad():
                self.last_accuracy = (logits.argmax(1) == local).float().mean().item() if local.numel() else math.nan
        else:
            loss, correct = _DistSoftmaxCE.apply(logits, local)
            self.last_accuracy = correct.float().mean().item() if correct.numel() else math.nan
        extra = head.extra_loss() if hasattr(head, "extra_loss") else None
        if extra is not None:
            loss = loss + (extra if world == 1 else _scale_grad(extra, 1.0 / world))
        return loss

    def _head_generator(self, given: torch.Generator | None, device: torch.device) -> torch.Generator:
        """The stochastic head's generator: the one passed, the one the trainer set, or a seeded one on ``device``."""
        if given is not None:
            return given
        if self.head_generator is None:
            seed = self.sample_seed + 104729 * (self.rank + 1)
            self.head_generator = torch.Generator(device=device).manual_seed(seed)
        return self.head_generator

    # --------------------------------------------------------------------------------------- checkpoints
    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """(num_local, ...) -> (num_classes, ...) on every rank, e.g. the weight or its SGD momentum. Collective."""
        if local.shape[0] != self.num_local:
            raise ValueError(f"expected {self.num_local} rows (this rank's shard), got {local.shape[0]}")
        if self.world_size == 1:
            return local.detach().clone()
        sizes = [shard_range(self.num_classes, self.world_size, r) for r in range(self.world_size)]
        return D.all_gather(local.detach().contiguous(), [end - start for start, end in sizes]).clone()

    def shard_rows(self, full: torch.Tensor) -> torch.Tensor:
        """(num_classes, ...) -> this rank's rows [start, end)."""
        if full.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} rows (all classes), got {full.shape[0]}")
        return full[self.start:self.end]

    def gather_full_weight(self) -> torch.Tensor:
        """The full (num_classes, D) centre matrix, on every rank (a collective: all ranks must call it)."""
        return self.gather_rows(self.weight)

    @torch.no_grad()
    def load_full_weight(self, full: torch.Tensor) -> None:
        """Load this rank's rows of a full (num_classes, D) matrix, e.g. a single-process classifier's ``weight`` or a
        checkpoint written by a run with another world size."""
        if tuple(full.shape) != (self.num_classes, self.embedding_size):
            raise ValueError(f"expected a ({self.num_classes}, {self.embedding_size}) centre matrix, "
                             f"got {tuple(full.shape)}")
        self.weight.copy_(self.shard_rows(full).to(self.weight.device, self.weight.dtype))

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """``{"weight": full matrix}``: a single-process classifier's layout, whatever the world size. Collective."""
        return {"weight": self.gather_full_weight()}

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_full_weight(state["weight"])
