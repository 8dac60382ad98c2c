"""Batch samplers for training: P identities x K images per batch (triplet, octuplet, siamese losses), DDP-aware.

Which sampler the trainer should use:

* **Uniform shuffling** (classification heads: ArcFace, CosFace, ...): :class:`ShuffledBatchSampler`, what the
  trainer uses. Its order is a pure function of (seed, epoch), split over DDP ranks like ``DistributedSampler``,
  and it can start at any batch of the epoch, so a run killed mid-epoch resumes at the exact batch it stopped at.
* **Identity batches** (losses that need several images of one identity in a batch): :class:`IdentityBatchSampler`,
  passed as ``DataLoader(dataset, batch_sampler=sampler, num_workers=...)`` (no ``batch_size``, ``shuffle``,
  ``sampler`` or ``drop_last``), with ``sampler.set_epoch(epoch)`` before every epoch, the same on every rank.

Labels: the sampler takes a plain sequence of per-image labels (list, numpy array, tensor), so it needs nothing from
the dataset classes; ``dataset.labels()`` gives them (``FaceDataset``'s contract; the built-ins answer from their
index without reading images). The sampler does not read data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch


class IdentityBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``p`` distinct identities x ``k`` images each, sharded by identity across DDP ranks.

    * Each epoch, the eligible identities are shuffled with a generator seeded by ``(seed, epoch)``: the same
      permutation on every rank. Rank ``r`` takes the ``r``-th contiguous block, so the ranks' shards are disjoint
      and, together, cover the eligible identities. With ``drop_last=True`` the permutation is cut to a multiple of
      ``world_size`` (the at most ``world_size - 1`` identities left out change every epoch) and the identities of a
      shard that do not fill a last batch of ``p`` are unused this epoch. With ``drop_last=False`` the permutation is
      extended cyclically (as ``DistributedSampler`` pads) until every rank has the same number of full batches, so
      every identity is used and a few appear twice in the epoch (possibly on two ranks). Every rank always yields the
      same number of batches, as DDP requires.
    * Images of one identity: ``k`` distinct ones drawn without replacement when it has at least ``k``; otherwise
      all of its images plus random repeats to make ``k`` (with replacement).
    * Identities with one image are kept only when ``k == 1`` (a triplet needs two images of an identity); otherwise
      they are skipped, and ``skipped_identities`` / ``skipped_images`` say how many.
    * A batch lists its indices identity-major: ``k`` indices of the first identity, then ``k`` of the second, ...
    * Deterministic given ``seed``, ``epoch``, ``rank`` and ``world_size``; ``set_epoch`` before each epoch.
    """

    def __init__(self, labels: Sequence | np.ndarray | torch.Tensor, p: int, k: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, drop_last: bool = True):
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 1:
            raise ValueError(f"labels must be one label per image (1-D), got shape {labels.shape}")
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.p, self.k, self.seed, self.rank, self.world_size = int(p), int(k), int(seed), int(rank), int(world_size)
        self.drop_last, self.epoch = bool(drop_last), 0
        order = np.argsort(labels, kind="stable")
        values, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
        keep = counts >= (1 if self.k == 1 else 2)
        self.identities = values[keep]  #: the eligible identities' labels, sorted
        self.skipped_identities = int((~keep).sum())  #: identities left out (a single image while k > 1)
        self.skipped_images = int(counts[~keep].sum())
        self._members = [order[s:s + c] for s, c in zip(starts[keep], counts[keep])]
        n = len(self._members)
        if self.p > n:
            raise ValueError(f"p={self.p} identities per batch, but only {n} identities are eligible "
                             f"({self.skipped_identities} with a single image skipped)")
        if len(self) == 0:
            raise ValueError(f"{n} eligible identities over {self.world_size} ranks do not fill one batch of "
                             f"p={self.p} per rank; lower p or use drop_last=False")

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that the next iteration shuffles for (the same value on every rank)."""
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        n = len(self._members)
        if self.drop_last:
            return n // self.world_size
        return math.ceil(n / (self.world_size * self.p)) * self.p

    def __len__(self) -> int:
        return self._per_rank() // self.p

    def shard(self) -> np.ndarray:
        """This rank's identities for the current epoch, as positions into ``identities``, in batch order."""
        n, per_rank = len(self._members), self._per_rank()
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        total = per_rank * self.world_size
        perm = perm[np.arange(total) % n]  # cut (drop_last) or cyclic padding (p <= n keeps batches distinct)
        return perm[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 1, self.rank])
        shard = self.shard()
        for b in range(len(self)):
            batch: list[int] = []
            for ident in shard[b * self.p:(b + 1) * self.p]:
                members = self._members[ident]
                if len(members) >= self.k:
                    picked = rng.choice(members, self.k, replace=False)
                else:
                    picked = np.concatenate([rng.permutation(members),
                                             rng.choice(members, self.k - len(members), replace=True)])
                batch.extend(int(i) for i in picked)
            yield batch


class ShuffledBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Uniformly shuffled batches of ``batch_size`` (per rank), a pure function of ``(seed, epoch)``.

    The epoch's permutation of all ``n`` indices is the same on every rank; it is cut to a multiple of
    ``world_size * batch_size`` (the last, incomplete global batch is dropped) and rank ``r`` takes every
    ``world_size``-th index from ``r``, as ``DistributedSampler`` does. ``start_batch`` skips the batches a resumed
    run has already trained on.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int = 0, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1):
        if batch_size < 1 or n < 0:
            raise ValueError(f"need batch_size >= 1 and n >= 0, got {batch_size} and {n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def __len__(self) -> int:
        """Batches per epoch per rank (before ``start_batch`` is skipped)."""
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator)
        mine = order[: len(self) * self.batch_size * self.world_size][self.rank::self.world_size]
        for b in range(self.start_batch, len(self)):
            yield mine[b * self.batch_size:(b + 1) * self.batch_size].tolist()
