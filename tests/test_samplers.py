"""The P x K identity batch sampler: batch composition, DDP shards, determinism, DataLoader use."""

from collections import Counter

import numpy as np
import pytest
import torch

from lrfr_plugins.engine.samplers import IdentityBatchSampler


def make_labels(seed=0, identities=40):
    """Identities with 1..9 images each, in shuffled order; identities 0..4 have exactly one image."""
    rng = np.random.default_rng(seed)
    counts = np.concatenate([np.ones(5, int), rng.integers(2, 10, identities - 5)])
    labels = np.repeat(np.arange(identities), counts)
    return rng.permutation(labels), counts


def test_every_batch_has_p_distinct_identities_with_k_images_each():
    labels, counts = make_labels()
    sampler = IdentityBatchSampler(labels, p=4, k=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 35 // 4
    for batch in batches:
        assert len(batch) == 12
        ids = labels[batch]
        per = Counter(ids.tolist())
        assert len(per) == 4 and set(per.values()) == {3}
        assert ids.tolist() == np.repeat(ids[::3], 3).tolist()  # identity-major
        for ident in per:
            chosen = [i for i in batch if labels[i] == ident]
            # distinct images when the identity has enough; all of them, plus repeats, when it has fewer than k
            assert len(set(chosen)) == min(3, counts[ident])
    per_epoch = Counter(int(labels[i]) for b in batches for i in b[::3])
    assert set(per_epoch.values()) == {1}  # an identity appears in at most one batch per epoch


def test_single_image_identities_are_skipped_and_counted_unless_k_is_1():
    labels, _ = make_labels()
    sampler = IdentityBatchSampler(labels, p=5, k=2, seed=0)
    assert sampler.skipped_identities == 5 and sampler.skipped_images == 5
    assert set(range(5)).isdisjoint(sampler.identities.tolist())
    seen = set().union(*[set(labels[b].tolist()) for b in sampler])
    assert seen.isdisjoint(range(5))
    ones = IdentityBatchSampler(labels, p=5, k=1, seed=0)
    assert ones.skipped_identities == 0 and len(ones.identities) == 40


def test_ranks_get_disjoint_shards_covering_the_eligible_identities():
    labels, _ = make_labels(identities=41)  # 36 eligible: divisible by 2 and 3
    for world in (2, 3):
        samplers = [IdentityBatchSampler(labels, p=3, k=2, seed=7, rank=r, world_size=world) for r in range(world)]
        for epoch in (0, 1):
            for s in samplers:
                s.set_epoch(epoch)
            shards = [set(s.identities[s.shard()].tolist()) for s in samplers]
            assert sum(len(sh) for sh in shards) == len(set().union(*shards))  # disjoint
            assert set().union(*shards) == set(samplers[0].identities.tolist())  # cover
            used = [set().union(*[set(labels[b].tolist()) for b in s]) for s in samplers]
            assert sum(len(u) for u in used) == len(set().union(*used))
            assert len({len(s) for s in samplers}) == 1  # the same number of batches on every rank (DDP)
            assert all(len(list(s)) == len(s) == 36 // world // 3 for s in samplers)


def test_uneven_counts_drop_last_and_padding():
    labels, _ = make_labels(identities=40)  # 35 eligible
    cut = [IdentityBatchSampler(labels, p=4, k=2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in cut] == [4, 4]  # 17 identities per rank, 4 full batches
    shards = [set(s.identities[s.shard()].tolist()) for s in cut]
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 34
    pad = [IdentityBatchSampler(labels, p=4, k=2, seed=1, rank=r, world_size=2, drop_last=False) for r in range(2)]
    assert [len(s) for s in pad] == [5, 5]  # ceil(35 / 8) batches, padded cyclically
    used = set()
    for s in pad:
        for batch in s:
            assert len(set(labels[batch].tolist())) == 4
            used |= set(labels[batch].tolist())
    assert used == set(pad[0].identities.tolist())  # every identity used


def test_deterministic_given_seed_and_epoch():
    labels, _ = make_labels()
    a, b = IdentityBatchSampler(labels, 4, 2, seed=3), IdentityBatchSampler(labels, 4, 2, seed=3)
    assert list(a) == list(b) == list(a)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(IdentityBatchSampler(labels, 4, 2, seed=4)) != list(IdentityBatchSampler(labels, 4, 2, seed=3))


def test_bad_arguments():
    labels, _ = make_labels()
    with pytest.raises(ValueError, match="only 35 identities are eligible"):
        IdentityBatchSampler(labels, p=36, k=2, seed=0)
    with pytest.raises(ValueError, match="do not fill one batch"):
        IdentityBatchSampler(labels, p=10, k=2, seed=0, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank"):
        IdentityBatchSampler(labels, p=2, k=2, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="p and k"):
        IdentityBatchSampler(labels, p=0, k=2, seed=0)


class _Labelled(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.full((3, 4, 4), i, dtype=torch.uint8), int(self.labels[i])


def test_works_as_a_dataloader_batch_sampler():
    labels, _ = make_labels()
    sampler = IdentityBatchSampler(torch.as_tensor(labels), p=4, k=2, seed=0)
    loader = torch.utils.data.DataLoader(_Labelled(labels), batch_sampler=sampler)
    assert len(loader) == len(sampler)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected = list(sampler)
        got = list(loader)
        assert len(got) == len(expected)
        for (images, ys), idx in zip(got, expected):
            assert images.shape == (8, 3, 4, 4) and images[:, 0, 0, 0].tolist() == [i % 256 for i in idx]
            assert ys.tolist() == labels[idx].tolist()
