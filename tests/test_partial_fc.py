"""Partial FC: sharding helpers, exact single-process equivalence, and a 2-process gloo run vs one process."""

from __future__ import annotations

import itertools
import math
import pathlib
import warnings

import pytest
import torch
import torch.nn.functional as F

import lrfr_plugins
from lrfr_plugins.engine import distributed as D
from lrfr_plugins.engine.partial_fc import (
    PartialFC,
    dist_cross_entropy,
    num_sampled,
    sample_classes,
    shard_labels,
    shard_range,
)

IN, EMB = 16, 8


def make_head(name: str, params: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # magface's lambda_g bound warning at small scales
        return lrfr_plugins.create("head", name, **params)


# ----------------------------------------------------------------------------------- helpers, no processes
def test_shard_range_is_contiguous_and_even():
    assert [shard_range(10, 3, r) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    for classes in range(4, 30):
        for world in range(1, 5):
            ranges = [shard_range(classes, world, r) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == classes
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            counts = [end - start for start, end in ranges]
            assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)
    with pytest.raises(ValueError, match="one class per rank"):
        shard_range(2, 3, 0)


def test_shard_labels_maps_owned_classes_and_marks_others():
    labels = torch.tensor([0, 3, 4, 6, 7, 9])
    assert shard_labels(labels, 4, 7).tolist() == [-1, -1, 0, 2, -1, -1]
    assert shard_labels(labels, 0, 10).tolist() == labels.tolist()


def test_sample_classes_keeps_positives_and_remaps_labels():
    local = torch.tensor([7, -1, 1, 7, -1, 1])
    index, remapped = sample_classes(local, 10, 0.5, torch.Generator().manual_seed(0))
    assert index.numel() == 5 == num_sampled(10, 0.5)
    assert index.tolist() == sorted(set(index.tolist()))  # sorted, unique
    assert {1, 7} <= set(index.tolist())
    owned = local >= 0
    assert torch.equal(index[remapped[owned]], local[owned]) and (remapped[~owned] == -1).all()
    # deterministic for a given generator state, different negatives for another
    again, _ = sample_classes(local, 10, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(index, again)
    draws = {tuple(sample_classes(local, 10, 0.5, torch.Generator().manual_seed(s))[0].tolist()) for s in range(20)}
    assert len(draws) > 1
    # more positives than ceil(rate * num_local): all positives, nothing else
    many = torch.tensor([0, 2, 4, 6, 8])
    index, remapped = sample_classes(many, 10, 0.3, torch.Generator().manual_seed(1))
    assert index.tolist() == [0, 2, 4, 6, 8] and remapped.tolist() == [0, 1, 2, 3, 4]
    # ceil with a guard against float error; rate 1 keeps everything
    assert num_sampled(30, 0.1) == 3 and num_sampled(7, 0.5) == 4 and num_sampled(10, 0.01) == 1
    index, remapped = sample_classes(local, 10, 1.0)
    assert index.tolist() == list(range(10)) and torch.equal(remapped, local)


def test_seeded_init_does_not_depend_on_world_size():
    full = PartialFC(10_000, 4, seed=3).weight.detach()
    shards = [PartialFC(10_000, 4, seed=3, rank=r, world_size=3).weight.detach() for r in range(3)]
    assert torch.equal(torch.cat(shards), full)
    assert abs(full.std().item() - 0.01) < 5e-4
    pfc = PartialFC(10_000, 4, rank=1, world_size=3)
    pfc.load_full_weight(full)
    assert torch.equal(pfc.weight.detach(), full[pfc.start:pfc.end])
    with pytest.raises(RuntimeError, match="process group"):
        pfc(torch.randn(2, 4), torch.tensor([0, 1]), make_head("arcface", {}))



class NormalizedClassifier(torch.nn.Module):
    """The plain single-process classifier PartialFC must reproduce: cosine of normalised embeddings and centres,
    centres N(0, 0.01)."""

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1.0, 1.0)

@pytest.mark.parametrize("name,params", [("arcface", {}), ("cosface", {}), ("magface", {"scale": 16.0}),
                                         ("adaface", {"t_alpha": 0.5})])
def test_world_size_one_is_exactly_plain_cross_entropy(name, params):
    classes, n = 11, 6
    torch.manual_seed(5)
    classifier = NormalizedClassifier(classes, EMB)
    torch.manual_seed(5)
    pfc = PartialFC(classes, EMB)
    assert torch.equal(classifier.weight, pfc.weight)  # same init as the classifier from the same RNG state
    assert pfc.state_dict().keys() == classifier.state_dict().keys()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, IN, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    backbone = torch.nn.Linear(IN, EMB)
    with torch.no_grad():
        backbone.weight.mul_(60)

    def run(use_pfc: bool):
        backbone.zero_grad()
        head = make_head(name, params)
        emb = backbone(x)
        quality = emb.norm(dim=1) if head.needs_quality else None
        if use_pfc:
            loss = pfc(emb, labels, head, quality)
            module = pfc
        else:  # the plain trainer's train_step
            logits = head(classifier(emb), labels, quality)
            loss = F.cross_entropy(logits, labels)
            extra = head.extra_loss()
            if extra is not None:
                loss = loss + extra
            module = classifier
        module.zero_grad()
        loss.backward()
        return loss.detach(), backbone.weight.grad.clone(), module.weight.grad.clone(), dict(head.named_buffers())

    ref, got = run(False), run(True)
    assert torch.equal(ref[0], got[0])
    assert torch.equal(ref[1], got[1]) and torch.equal(ref[2], got[2])
    assert ref[3].keys() == got[3].keys() and all(torch.equal(ref[3][k], got[3][k]) for k in ref[3])
    assert dist_cross_entropy(torch.ones(2, 3), torch.tensor([0, 2])).item() == pytest.approx(math.log(3))
    assert 0.0 <= pfc.last_accuracy <= 1.0


def test_world_size_one_sampling_scores_only_the_sampled_classes():
    classes, n = 20, 6
    pfc = PartialFC(classes, EMB, sample_rate=0.5, seed=0)
    x = torch.randn(n, EMB, generator=torch.Generator().manual_seed(2), requires_grad=True)
    labels = torch.tensor([3, 3, 17, 8, 0, 17])
    head = make_head("arcface", {"scale": 16.0})
    loss = pfc(x, labels, head, generator=torch.Generator().manual_seed(9))
    loss.backward()
    index = pfc.last_index
    assert index.numel() == 10 and {0, 3, 8, 17} <= set(index.tolist())
    cosine = F.linear(F.normalize(x), F.normalize(pfc.weight[index])).clamp(-1, 1)
    ref = F.cross_entropy(head(cosine, torch.searchsorted(index, labels), None), torch.searchsorted(index, labels))
    assert torch.equal(loss, ref)
    untouched = torch.ones(classes, dtype=torch.bool)
    untouched[index] = False
    assert (pfc.weight.grad[untouched] == 0).all() and (pfc.weight.grad[index].abs().sum(1) > 0).all()


# -------------------------------------------------------------------------------- 2 gloo processes vs one
CLASSES = 7
# name -> (head, head params, rows per rank, steps, sample_rate, classes)
CASES = {
    "arcface": ("arcface", {"scale": 16.0}, (5, 3), 1, 1.0, CLASSES),
    "adaface": ("adaface", {"scale": 16.0, "t_alpha": 0.5, "h": 1.0}, (4, 4), 2, 1.0, CLASSES),
    "magface": ("magface", {"scale": 16.0, "lambda_g": 35.0}, (4, 4), 1, 1.0, CLASSES),
    "sampled": ("arcface", {"scale": 16.0}, (4, 4), 1, 0.5, 20),
}


def _case_data(case: str):
    """The deterministic 'backbone', global batches (one per step) and full centre matrix of a case."""
    _, _, sizes, steps, _, classes = CASES[case]
    torch.manual_seed(123)
    backbone = torch.nn.Linear(IN, EMB)
    with torch.no_grad():
        backbone.weight.mul_(60)  # feature norms ~ 10-100: inside MagFace's [l_a, u_a], so its norm gradient flows
    gen = torch.Generator().manual_seed(7)
    n = sum(sizes)
    batches = [(torch.randn(n, IN, generator=gen), torch.randint(0, classes, (n,), generator=gen))
               for _ in range(steps)]
    full = torch.randn(classes, EMB, generator=gen) * 0.01
    return backbone, batches, full


def _run_case(case: str, rank: int, world: int, head_params: dict | None = None) -> dict:
    head_name, params, sizes, _, sample_rate, classes = CASES[case]
    params = params if head_params is None else head_params
    backbone, batches, full = _case_data(case)
    if world == 1:
        sizes = (sum(sizes),)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    head = make_head(head_name, params)
    pfc = PartialFC(classes, EMB, sample_rate=sample_rate)
    pfc.load_full_weight(full)
    losses = []
    for step, (x, labels) in enumerate(batches):
        backbone.zero_grad()
        pfc.zero_grad()
        emb = backbone(x[lo:hi])
        quality = emb.norm(dim=1) if head.needs_quality else None  # the 'feature-norm' quality, with gradient
        loss = pfc(emb, labels[lo:hi], head, quality, generator=torch.Generator().manual_seed(100 * step + rank))
        loss.backward()
        losses.append(loss.detach())
    grads = {}
    for key, param in backbone.named_parameters():
        grad = param.grad.clone()
        if world > 1:  # what DDP does: average over ranks
            torch.distributed.all_reduce(grad)
            grad /= world
        grads[key] = grad
    out = {"losses": torch.stack(losses), "backbone_grads": grads,
           "weight_grad": pfc.gather_rows(pfc.weight.grad), "full_weight": pfc.gather_full_weight(),
           "buffers": {k: v.clone() for k, v in head.named_buffers()}, "accuracy": pfc.last_accuracy}
    if pfc.last_index is not None:
        index = pfc.last_index + pfc.start
        out["index"] = D.all_gather(index) if world > 1 else index
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        assert D.is_distributed() and D.rank() == rank and D.world_size() == world
        results = {case: _run_case(case, rank, world) for case in CASES}
        D.barrier()
        torch.save(results, pathlib.Path(out_dir) / f"rank{rank}.pt")
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pfc")
    torch.multiprocessing.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt") for r in range(2)]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("case", ["arcface", "adaface", "magface"])
def test_two_ranks_equal_one_process(two_rank_results, case):
    ref = _run_case(case, 0, 1)
    for got in two_rank_results:
        got = got[case]
        _close(got["losses"], ref["losses"])
        for key in ref["backbone_grads"]:
            _close(got["backbone_grads"][key], ref["backbone_grads"][key])
        _close(got["weight_grad"], ref["weight_grad"])
        torch.testing.assert_close(got["full_weight"], _case_data(case)[2], rtol=0, atol=0)
        assert got["buffers"].keys() == ref["buffers"].keys()
        for key in ref["buffers"]:
            _close(got["buffers"][key], ref["buffers"][key])
    # the ranks agree bit for bit where they compute the same thing from the same gathered input
    a, b = (r[case] for r in two_rank_results)
    assert torch.equal(a["losses"], b["losses"]) and a["accuracy"] == b["accuracy"]
    assert all(torch.equal(a["buffers"][k], b["buffers"][k]) for k in a["buffers"])
    if case == "adaface":  # the EMA statistics moved off their initial values
        assert not torch.equal(ref["buffers"]["batch_mean"], torch.full((1,), 20.0))


def test_magface_regulariser_is_counted_once(two_rank_results):
    """The regulariser's share of the backbone gradient is far above the tolerance, so counting it W times fails."""
    params = CASES["magface"][1]
    without = _run_case("magface", 0, 1, head_params={**params, "lambda_g": 0.0})
    ref = _run_case("magface", 0, 1)
    got = two_rank_results[0]["magface"]
    share = (ref["backbone_grads"]["weight"] - without["backbone_grads"]["weight"]).abs().max()
    assert share > 1e3 * 1e-6 * ref["backbone_grads"]["weight"].abs().max()
    _close(got["backbone_grads"]["weight"], ref["backbone_grads"]["weight"])


def test_two_ranks_sampling(two_rank_results):
    """sample_rate 0.5: each shard keeps its positives plus negatives up to ceil(0.5 * 10); the distributed loss and
    gradients equal one process's cross-entropy over the union of the sampled classes."""
    head_name, params, _, _, _, classes = CASES["sampled"]
    backbone, [(x, labels)], full = _case_data("sampled")
    got = two_rank_results[0]["sampled"]
    index = got["index"]
    assert torch.equal(index, two_rank_results[1]["sampled"]["index"])
    for rank in range(2):
        start, end = shard_range(classes, 2, rank)
        mine = index[(index >= start) & (index < end)]
        positives = set(labels[(labels >= start) & (labels < end)].tolist())
        assert positives <= set(mine.tolist())
        assert mine.numel() == max(math.ceil(0.5 * (end - start)), len(positives))
    emb = backbone(x)
    weight = full.clone().requires_grad_(True)
    head = make_head(head_name, params)
    remapped = torch.searchsorted(index, labels)
    cosine = F.linear(F.normalize(emb), F.normalize(weight[index])).clamp(-1, 1)
    loss = F.cross_entropy(head(cosine, remapped, None), remapped)
    loss.backward()
    _close(got["losses"][0], loss.detach())
    _close(got["backbone_grads"]["weight"], backbone.weight.grad)
    _close(got["weight_grad"], weight.grad)
    unsampled = torch.ones(classes, dtype=torch.bool)
    unsampled[index] = False
    assert (got["weight_grad"][unsampled] == 0).all()
