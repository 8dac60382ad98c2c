"""Conformance checks for plugin authors: a plugin's test file is three lines.

    from lrfr_plugins.testing import check_plugin
    def test_my_head():
        check_plugin("head", "curricularface")

Each check calls the plugin the way the host does (the trainer, Partial FC, the runner, the protocols' embedder) and
raises AssertionError saying what is wrong and what the host expects. Checks run on the CPU in seconds; give
plugins with expensive defaults small parameters (``check_plugin("finetuner", "mine", steps=2)``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

_SIZE = 112


def _images(n: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 (n, 3, 112, 112) test faces of varied sharpness: smooth blobs, blobs plus noise, pure noise, one flat.
    Varied content makes per-image values differ, and noise makes a horizontal flip change the pixels."""
    blobs = F.interpolate(torch.rand(n, 3, 8, 8, generator=generator) * 255, size=(_SIZE, _SIZE), mode="bilinear",
                          align_corners=False)
    noise = torch.rand(n, 3, _SIZE, _SIZE, generator=generator) * 255
    weight = torch.linspace(0.0, 1.0, n).view(n, 1, 1, 1)  # row 0 smooth ... last row noise
    images = (blobs * (1 - weight) + noise * weight).round().clamp(0, 255).to(torch.uint8)
    if n > 2:
        images[1] = 128  # a flat image: zero sharpness, nothing to degrade
    return images


def _json(value: Any, what: str) -> None:
    """Strict JSON (no NaN, no ``default=``): what metrics.json and ``lrfr eval --json`` must be able to hold."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what}: not JSON-serialisable ({exc}); the host writes it to metrics.json: use "
                             "str, int, float (finite), bool, None, lists and dicts (convert tensors and numpy "
                             "scalars with float()/int()/.tolist())") from None


# ------------------------------------------------------------------------------------------------- heads
def _call_head(head: torch.nn.Module, cosine: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor | None,
               seed: int) -> torch.Tensor:
    """The call Partial FC makes; stochastic heads also get ``generator=`` on cosine's device."""
    if not getattr(head, "stochastic", False):
        return head(cosine, labels, quality)
    generator = torch.Generator(device=cosine.device).manual_seed(seed)
    try:
        return head(cosine, labels, quality, generator=generator)
    except TypeError as exc:
        raise AssertionError(f"a head with stochastic = True must accept head(cosine, labels, quality, generator=g) "
                             f"(the host passes its generator): {exc}") from None


@functools.lru_cache(maxsize=4)
def _faces(n: int) -> torch.Tensor:
    """n synthetic faces of two identities (rendering takes a while: kept for the next head)."""
    from . import create

    data = create("dataset", "synthetic", num_identities=2, images_per_identity=n)
    return torch.stack([data[i][0] for i in range(n)])


def _head_quality(head: torch.nn.Module, n: int, generator: torch.Generator) -> torch.Tensor | None:
    """The quality a head sees in training: the values of its ``calibrated_quality`` estimator (the units its
    defaults assume) on synthetic faces, some degraded; uniform [0, 1) for a head that declares no units."""
    if not getattr(head, "needs_quality", False):
        return None
    name = getattr(head, "calibrated_quality", None)
    if name is None:
        return torch.rand(n, generator=generator)
    from . import create
    from .errors import LrfrError

    try:
        estimator = create("quality", name)
    except LrfrError as exc:
        raise AssertionError(f"calibrated_quality = {name!r} must name an installed quality estimator: {exc}") from None
    faces = _faces(n)
    out = create("degradation", "cross-resolution")(faces, generator)
    if getattr(estimator, "uses_embeddings", False):  # 512-d, unit variance: norms near 22, as a backbone's
        return estimator(out.images, lr_mask=out.lr_mask,
                         embeddings=torch.randn(n, 512, generator=generator)).detach().float()
    return estimator(out.images, lr_mask=out.lr_mask).detach().float()


def check_head(head: torch.nn.Module, num_classes: int = 5) -> None:
    """Scaled logits (N, C), finite at cosine = +-1 and for C = 1, rows with label -1 only scaled, gradients flow;
    the same logits again from the same inputs (and, for a stochastic head, the same generator seed), whatever the
    global RNG: resumed and multi-rank runs rely on it."""
    g = torch.Generator().manual_seed(0)
    stochastic = getattr(head, "stochastic", False)
    for c in (num_classes, 1):
        cosine = (torch.rand(6, c, generator=g) * 2 - 1)
        cosine[0] = 1.0
        cosine[1] = -1.0
        labels = torch.randint(0, c, (6,), generator=g)
        labels[-1] = -1
        quality = _head_quality(head, 6, g)
        runs = []
        for global_seed in (1, 2):  # a fresh copy each time: heads with running statistics update them per call
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(global_seed)
                runs.append(_call_head(copy.deepcopy(head), cosine.clone(), labels, quality, seed=0).detach())
        if not torch.equal(runs[0], runs[1]):
            raise AssertionError(
                "the same generator seed gave different logits: a stochastic head must draw every random number "
                "from the generator= the host passes (not the global RNG)" if stochastic else
                "the same inputs gave different logits under a different global RNG state: a head that draws random "
                "numbers sets stochastic = True and draws them from the generator= the host then passes")
        cosine.requires_grad_(True)
        logits = _call_head(head, cosine, labels, quality, seed=0)
        assert logits.shape == (6, c), f"expected logits of shape (6, {c}), got {tuple(logits.shape)}"
        assert torch.isfinite(logits).all(), "logits are not finite at cosine = +-1"
        torch.nn.functional.cross_entropy(logits[:-1], labels[:-1]).backward()
        assert cosine.grad is not None and torch.isfinite(cosine.grad).all(), "no finite gradient w.r.t. cosine"
        row, cos_row = logits[-1].detach(), cosine[-1].detach()
        nonzero = cos_row.abs() > 1e-3
        ratio = row[nonzero] / cos_row[nonzero]
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-4), "a row with label -1 must only be scaled"


# --------------------------------------------------------------------------------------------- backbones
@torch.no_grad()
def check_backbone(backbone: torch.nn.Module) -> None:
    """(N, 3, 112, 112) -> (N, embedding_size): two images in train mode (BatchNorm needs two), one in eval mode
    (a protocol may embed a single image). No gradients: the shapes are the contract, and deep backbones are slow."""
    size = backbone.embedding_size
    x = torch.randn(2, 3, _SIZE, _SIZE, generator=torch.Generator().manual_seed(0))
    for mode, batch in ((True, x), (False, x[:1])):
        backbone.train(mode)
        out = backbone(batch)
        n = batch.shape[0]
        assert out.shape == (n, size), f"expected ({n}, {size}) in {'train' if mode else 'eval'} mode, " \
                                       f"got {tuple(out.shape)}"
        assert torch.isfinite(out).all(), f"non-finite embeddings in {'train' if mode else 'eval'} mode"


# ------------------------------------------------------------------------------------------ degradations
def _check_degraded(out: Any, x: torch.Tensor, label: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One call's result against its input: shape, dtype, device, masks, and every changed image marked."""
    n = x.shape[0]
    for name in ("images", "lr_mask", "changed"):
        assert hasattr(out, name), f"{label}: a degradation returns a DegradedBatch (images, lr_mask, changed); " \
                                   f"the result has no {name!r}"
    images, lr_mask, changed = out.images, out.lr_mask, out.changed
    assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.shape == x.shape, \
        f"{label}: expected uint8 images of shape {tuple(x.shape)} (the input's), got " \
        f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
    assert images.device == x.device, f"{label}: images came back on {images.device}, the input is on {x.device}"
    for name, mask in (("lr_mask", lr_mask), ("changed", changed)):
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == (n,), \
            f"{label}: {name} must be a bool tensor of shape ({n},), got " \
            f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}"
        assert mask.device == x.device, f"{label}: {name} is on {mask.device}, the images on {x.device}"
    differ = (images != x).flatten(1).any(1)
    unmarked = (differ & ~changed).nonzero().flatten().tolist()
    assert not unmarked, (
        f"{label}: images {unmarked} differ from the input but are not marked in DegradedBatch.changed; the host "
        "recomputes a cached quality only where changed is set (it defaults to lr_mask): return "
        "DegradedBatch(images, lr_mask, changed=...) marking every image whose pixels differ, and leave unmarked "
        "images bit-identical")
    return images, lr_mask, changed


def check_degradation(degradation: Any, num_images: int = 8) -> None:
    """``degradation(images, generator)`` as the trainer calls it, with the run's CPU generator.

    Same shape, dtype and device; ``lr_mask`` and ``changed`` bool (N,); every image whose pixels differ from the
    input marked in ``changed`` (unmarked images bit-identical); the input not modified in place; the same result
    for the same generator seed whatever the global RNG. The images of a real run are on the GPU while the
    generator stays on the CPU: on a machine with CUDA the check runs there too (CPU generator, CUDA images), on the
    CPU it can only pass the CPU generator, so draw with it on the CPU and move the result to ``images.device``.
    """
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    base = _images(num_images, torch.Generator().manual_seed(0))
    for device in devices:
        x = base.to(device)
        for seed in (1, 2, 3):
            results = []
            for global_seed in (10, 20):  # a degradation drawing from the global RNG gives two different results
                before = x.clone()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(global_seed)
                    out = degradation(x, torch.Generator().manual_seed(seed))
                assert torch.equal(x, before), \
                    "the degradation modified its input in place; return a new tensor (the host may hold the input)"
                results.append(_check_degraded(out, x, f"on {device}, generator seed {seed}"))
            (a, a_lr, a_ch), (b, b_lr, b_ch) = results
            assert torch.equal(a, b) and torch.equal(a_lr, b_lr) and torch.equal(a_ch, b_ch), (
                f"not deterministic: the same CPU generator (seed {seed}) gave different results on {device}; draw "
                "every random choice from the generator the host passes (it is checkpointed), not the global RNG")


# ---------------------------------------------------------------------------------------------- datasets
def check_dataset(dataset: Any) -> None:
    """len(), num_classes, items (uint8 3x112x112 RGB tensor, int label in range), and ``labels()``: one int label
    per item, the same as the items' own."""
    assert len(dataset) > 0 and dataset.num_classes > 0
    items = {index: dataset[index] for index in (0, len(dataset) - 1)}
    for image, label in items.values():
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.shape == (3, 112, 112)
        assert isinstance(label, int) and 0 <= label < dataset.num_classes
    method = getattr(dataset, "labels", None)
    assert callable(method), "the dataset has no labels() method: derive it from lrfr_plugins.api.FaceDataset"
    labels = method()
    assert isinstance(labels, np.ndarray) and labels.shape == (len(dataset),) and labels.dtype.kind in "iu", (
        f"labels() must return an integer numpy array of shape ({len(dataset)},), got {type(labels).__name__} "
        f"{getattr(labels, 'shape', '')} {getattr(labels, 'dtype', '')}")
    for index, (_, label) in items.items():
        assert int(labels[index]) == label, f"labels()[{index}] is {int(labels[index])} but item {index} has {label}"
    assert labels.min() >= 0 and labels.max() < dataset.num_classes, "labels() has labels outside 0..num_classes-1"


# --------------------------------------------------------------------------------------------- protocols
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_protocol(protocol: Any, embedding_size: int = 8) -> None:
    """``check()`` then ``evaluate(embed, progress=False)`` with a stub embedder, as the runner calls them.

    The embedder only accepts what the host's embedders accept, uint8 RGB (N, 3, 112, 112) tensors, and returns
    float32 (N, D) numpy embeddings (a fixed projection of the pixels: the same image, the same embedding). The
    result must be a ProtocolResult with rows (non-empty, dicts), results (condition -> {metric: number}: floats,
    ints for counts), curves (name -> dict of equal-length lists), settings (a dict), JSON-serialisable as_dict();
    and a second evaluation of the same embeddings must give the same results.
    """
    from .api import ProtocolResult

    assert callable(getattr(protocol, "check", None)), "a protocol has check() (the runner calls it before training)"
    protocol.check()
    projection = torch.randn(3 * 4 * 4, embedding_size, generator=torch.Generator().manual_seed(0))
    wrong: list[str] = []

    def embed(images: Any) -> np.ndarray:
        if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
                and tuple(images.shape[1:]) == (3, _SIZE, _SIZE) and images.device.type == "cpu"):
            wrong.append(f"{type(images).__name__} {getattr(images, 'dtype', '')} "
                         f"{tuple(getattr(images, 'shape', ()))}")
            raise AssertionError(f"the embedder got {wrong[-1]}; embedders take uint8 RGB CPU tensors (N, 3, 112, 112)")
        if images.shape[0] == 0:
            return np.zeros((0, embedding_size), np.float32)
        pooled = F.adaptive_avg_pool2d(images.float(), 4).flatten(1)
        return (pooled @ projection).numpy().astype(np.float32)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        result = protocol.evaluate(embed, progress=False)
        torch.manual_seed(2)
        again = protocol.evaluate(embed, progress=False)
    assert not wrong, f"the embedder got {wrong[0]}; embedders take uint8 RGB CPU tensors (N, 3, 112, 112) only"
    assert isinstance(result, ProtocolResult), f"evaluate() must return a ProtocolResult, got {type(result).__name__}"
    assert isinstance(result.protocol, str) and result.protocol, "ProtocolResult.protocol must name the protocol"
    assert isinstance(result.rows, list) and result.rows, "a protocol must return at least one row (the table)"
    assert all(isinstance(row, dict) and row for row in result.rows), "each row must be a non-empty dict"
    assert isinstance(result.results, dict) and result.results, \
        "ProtocolResult.results must map condition -> metrics (what lrfr eval --json and periodic evaluation read)"
    for key, metrics in result.results.items():
        assert isinstance(key, str), f"results keys are condition names (str), got {key!r}"
        assert isinstance(metrics, dict) and metrics, f"results[{key!r}] must be a non-empty dict of metrics"
        for name, value in metrics.items():
            assert _is_number(value) and math.isfinite(value), (
                f"results[{key!r}][{name!r}] = {value!r} ({type(value).__name__}); metrics must be finite floats "
                "(ints for counts): convert numpy and torch scalars with float()")
    assert isinstance(result.curves, dict), "ProtocolResult.curves must be a dict"
    for name, curve in result.curves.items():
        assert isinstance(curve, dict) and curve, f"curves[{name!r}] must be a dict of lists"
        lengths = set()
        for axis, values in curve.items():
            assert isinstance(values, list) and all(_is_number(v) for v in values), \
                f"curves[{name!r}][{axis!r}] must be a list of numbers"
            lengths.add(len(values))
        assert len(lengths) == 1, f"curves[{name!r}]: its lists must have equal lengths, got {sorted(lengths)}"
    assert isinstance(result.settings, dict), "ProtocolResult.settings must be a dict"
    assert result.preset is None or isinstance(result.preset, str), "ProtocolResult.preset must be a str or None"
    _json(result.as_dict(), "ProtocolResult.as_dict()")
    assert again.results == result.results, (
        "a second evaluate() of the same embeddings gave other results: the host seeds nothing for a protocol, so "
        "every random choice (pairs, folds) must come from its own parameters (each model is scored on the same "
        "conditions)")


# ------------------------------------------------------------------------------------------------ quality
def check_quality(quality: Any, num_images: int = 6) -> None:
    """Called as the trainer calls it: ``estimator(images, lr_mask=lr_mask)`` (uint8 images, bool (N,) mask with
    some images marked low-resolution), and with ``embeddings=`` (N, D) as well when ``uses_embeddings``; returns a
    finite float (N,). A ``cacheable`` estimator's value of an image must not depend on the other images of the
    batch (the cache computes subsets of it) nor on a horizontal flip (the cached value serves either). Every
    estimator must give the same values for the same input (the host seeds nothing for it)."""
    g = torch.Generator().manual_seed(0)
    x = _images(num_images, g)
    lr_mask = torch.arange(num_images) % 3 == 2
    uses_embeddings = getattr(quality, "uses_embeddings", False)
    # what the trainer passes: the backbone's float32 output, carrying its gradient
    embeddings = torch.randn(num_images, 16, generator=g).requires_grad_() * 1.0 if uses_embeddings else None
    call = "estimator(images, lr_mask=lr_mask" + (", embeddings=embeddings)" if uses_embeddings else ")")

    def run(images: torch.Tensor, mask: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        try:
            q = quality(images, lr_mask=mask, embeddings=emb) if uses_embeddings else quality(images, lr_mask=mask)
        except TypeError as exc:
            raise AssertionError(f"the host calls {call}: {exc}") from None
        n = images.shape[0]
        assert isinstance(q, torch.Tensor) and q.shape == (n,), \
            f"{call} must return a tensor of shape ({n},), got {type(q).__name__} {tuple(getattr(q, 'shape', ()))}"
        assert q.is_floating_point(), f"quality must be float, got {q.dtype}"
        assert q.device == images.device, f"quality came back on {q.device}, the images are on {images.device}"
        assert torch.isfinite(q).all(), f"quality is not finite: {q.tolist()}"
        return q.detach().float()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        q = run(x, lr_mask, embeddings)
        torch.manual_seed(2)
        again = run(x, lr_mask, embeddings)
    assert torch.equal(q, again), ("two calls on the same input gave different qualities: the host seeds nothing "
                                   "for an estimator, so it must be a deterministic function of its input")
    if not getattr(quality, "cacheable", False) or uses_embeddings:  # the cache holds image qualities only
        return

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, rtol=1e-5, atol=1e-6)

    for i in range(num_images):
        alone = run(x[i:i + 1], lr_mask[i:i + 1], None)
        assert same(alone, q[i:i + 1]), (
            f"cacheable = True, but image {i} has quality {q[i].item():g} in a batch and {alone.item():g} alone: the "
            "trainer caches per image and computes only some rows of later batches; set cacheable = False or compute "
            "each image's value from its own pixels")
    perm = torch.arange(num_images).flip(0)
    assert same(run(x[perm], lr_mask[perm], None), q[perm]), \
        "cacheable = True, but reordering the batch changed the images' qualities"
    flipped = run(x.flip(-1), lr_mask, None)
    assert same(flipped, q), (
        f"cacheable = True, but a horizontal flip changes the quality ({q.tolist()} vs {flipped.tolist()}): the "
        "cached value of an image serves it flipped or not; set cacheable = False")


# ---------------------------------------------------------------------------------------------- finetuners
class _Unlabelled(torch.utils.data.Dataset):
    """A dataset without identities, as the host hands a label-free finetuner (labels -1, ``num_classes`` 0)."""

    fixed_items = True
    num_classes = 0

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.dataset[i][0], -1


def check_finetuner(finetuner: Any, *, num_identities: int = 6, images_per_identity: int = 4,
                    batch_size: int = 8) -> None:
    """``check(backbone)`` (it must leave the weights alone), then ``run(FinetuneContext)`` on a tiny backbone and
    synthetic data, built as the runner builds it (arcface head, Partial FC classifier, the cross-resolution
    degradation); a label-free finetuner (``needs_labels()`` False) gets data without identities and no classifier.
    It must train the backbone's weights (left finite) and return a dict of JSON-serialisable metrics, with the
    backbone back in the mode it came in (train). The check does not choose the finetuner's steps: create it with
    small parameters (e.g. ``check_plugin("finetuner", "octuplet", steps=2, p=2, k=2, eval_identities=2)``)."""
    from . import create
    from .api import FinetuneContext
    from .engine.partial_fc import PartialFC

    needs_labels = finetuner.needs_labels()
    assert isinstance(needs_labels, bool), f"needs_labels() must return a bool, got {needs_labels!r}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4])
        head = create("head", "arcface")
        data = create("dataset", "synthetic", num_identities=num_identities, images_per_identity=images_per_identity)
        classifier = PartialFC(data.num_classes, backbone.embedding_size, seed=0) if needs_labels else None
        context = FinetuneContext(backbone, data if needs_labels else _Unlabelled(data),
                                  [create("degradation", "cross-resolution")], torch.device("cpu"),
                                  torch.Generator().manual_seed(0), progress=False, head=head, classifier=classifier,
                                  quality=None, batch_size=batch_size)
        before = {name: p.detach().clone() for name, p in backbone.named_parameters()}
        backbone.train()  # as training leaves it
        assert callable(getattr(finetuner, "check", None)), \
            "the finetuner has no check(backbone) method: derive it from lrfr_plugins.api.Finetuner"
        try:
            finetuner.check(backbone)  # the host's preflight, before training
        except Exception as exc:
            raise AssertionError(f"check(backbone) failed on the tiny backbone with these parameters: "
                                 f"{type(exc).__name__}: {exc}") from exc
        assert all(torch.equal(p.detach(), before[name]) for name, p in backbone.named_parameters()), \
            "check(backbone) changed the backbone's weights; it must only look"
        try:
            metrics = finetuner.run(context)
        except Exception as exc:
            given = ("data with identities, the arcface head and a Partial FC classifier" if needs_labels else
                     "data without identities (labels -1, num_classes 0) and no classifier, as the host may when "
                     "needs_labels() is False")
            raise AssertionError(f"run() failed on {given}: {type(exc).__name__}: {exc}") from exc
    assert backbone.training, "run() left the backbone in eval mode; restore the mode it came in (train)"
    changed = [name for name, p in backbone.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert changed, "run() left every weight of context.backbone as it was; a finetuner trains it in place"
    bad = [name for name, t in backbone.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"run() left non-finite weights in the backbone: {bad[:5]}"
    assert isinstance(metrics, dict), f"run() must return a dict of metrics, got {type(metrics).__name__}"
    assert all(isinstance(k, str) for k in metrics), "metric names must be str"
    _json(metrics, "the metrics run() returned")


CHECKS: dict[str, Callable[..., None]] = {
    "head": check_head, "backbone": check_backbone, "degradation": check_degradation, "dataset": check_dataset,
    "protocol": check_protocol, "quality": check_quality, "finetuner": check_finetuner}


def check_plugin(kind: str, name: str, **params: Any) -> None:
    """Create the registered plugin with ``params`` and run the conformance check of its kind."""
    from . import create

    check = CHECKS.get(kind)
    if check is None:
        raise ValueError(f"no conformance check for plugin kind {kind!r}: check_plugin checks {', '.join(CHECKS)}")
    check(create(kind, name, **params))
