"""A degradation's two masks: ``lr_mask`` (made low-resolution) and ``changed`` (any pixel differs). The quality
cache follows ``changed``: an image blurred or compressed but not down-sampled gets its quality recomputed."""

import textwrap

import torch

from lrfr_plugins.api import Degradation, DegradedBatch
from lrfr_plugins.engine.trainer import TrainComponents, Trainer
from lrfr_plugins.recipe import load_recipe

RECIPE = """
lrfr: 1
name: masks
data: {name: synthetic, params: {num_identities: 4, images_per_identity: 2}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [4, 8, 8, 16]}}
head: {name: approach2}
train: {epochs: 1, batch_size: 4, hflip: 0.0}
eval: []
"""


class NoiseOnFirst(Degradation):
    """Adds noise to image 0 only: its pixels change, its resolution does not."""

    def __call__(self, images, generator):
        out = images.clone()
        noise = torch.randint(0, 40, images[0].shape, generator=generator, dtype=torch.uint8).to(images.device)
        out[0] = out[0] // 2 + noise
        changed = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        changed[0] = True
        return DegradedBatch(out, lr_mask=torch.zeros_like(changed), changed=changed)


def trainer(tmp_path, registry, degradation):
    (tmp_path / "r.yaml").write_text(textwrap.dedent(RECIPE))
    recipe = load_recipe(tmp_path / "r.yaml", registry=registry)
    make = lambda kind: registry.create(kind, recipe.slot(kind)["name"], **recipe.slot(kind)["params"])  # noqa: E731
    parts = TrainComponents(make("backbone"), make("head"), registry.create("dataset", "synthetic",
                            num_identities=4, images_per_identity=2), [degradation],
                            registry.create("quality", "laplacian"))
    return Trainer(parts, recipe.train, recipe.optimizer, torch.device("cpu"), 0)


def test_changed_defaults_to_lr_mask():
    mask = torch.tensor([True, False])
    assert torch.equal(DegradedBatch(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), mask).changed, mask)


def test_the_quality_cache_recomputes_images_that_changed_without_being_made_low_resolution(tmp_path, registry):
    t = trainer(tmp_path, registry, NoiseOnFirst(None))
    images = torch.stack([t.parts.dataset[i][0] for i in range(4)])
    labels, indices = torch.arange(4), torch.arange(4)
    t._prepare(images, labels, indices)  # first sight: the clean images 1..3 are cached (and image 0 must not be)
    served, _, lr_mask, quality = t._prepare(images, labels, indices)  # image 0 gets other noise this time
    assert not lr_mask.any()
    assert torch.allclose(quality, t.parts.quality(served))  # the quality of the pixels trained on, not a stale one
