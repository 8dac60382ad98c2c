"""Batch samplers for training: P identities x K images per batch (triplet, octuplet, siamese losses), DDP-aware.

Which sampler the trainer should use:

* **Uniform shuffling** (classification heads: ArcFace, CosFace, ...): no class here. In one process,
  ``DataLoader(dataset, batch_size=B, shuffle=True, drop_last=True, generator=g)`` (torch's ``RandomSampler``), as
  the trainer does now. With DDP, ``torch.utils.data.DistributedSampler(dataset, num_replicas=world_size, rank=rank,
  shuffle=True, seed=seed, drop_last=True)`` passed as ``sampler=`` with the per-rank ``batch_size`` and
  ``drop_last=True``, and ``sampler.set_epoch(epoch)`` before every epoch (otherwise every epoch repeats the first
  epoch's order). Both are deterministic given the seed and the epoch, so resuming at an epoch boundary reproduces
  the order.
* **Identity batches** (losses that need several images of one identity in a batch): :class:`IdentityBatchSampler`,
  passed as ``DataLoader(dataset, batch_sampler=sampler, num_workers=...)`` (no ``batch_size``, ``shuffle``,
  ``sampler`` or ``drop_last``), with ``sampler.set_epoch(epoch)`` before every epoch, the same on every rank.

Labels: the sampler takes a plain sequence of per-image labels (list, numpy array, tensor), so it needs nothing from
the dataset classes; ``image-folder`` has them in ``dataset.index.labels``; for an ``insightface-rec`` pack they come
from the record headers (the caller's job; the sampler does not read data).
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
