"""Octuplet loss: REFERENCE §12 vectors, gradients for every metric, masks; the finetuner trains and validates."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lrfr_plugins
from lrfr_plugins.api import FinetuneContext
from lrfr_plugins.builtin.finetuners.octuplet import Octuplet, OctupletParams
from lrfr_plugins.errors import DataError, NonFiniteLossError, ParamsError
from lrfr_plugins.losses.octuplet import (
    METRICS,
    OctupletLoss,
    batch_hard_triplet,
    octuplet_loss,
    octuplet_terms,
    pairwise_distances,
)
from lrfr_plugins.ops.preprocess import to_network_input
from lrfr_plugins.params import build_params

HR = [[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8]]
LR = [[0.9, 0.3], [0.5, 0.5], [0.3, 0.9], [-0.2, 0.7]]
LABELS = torch.tensor([0, 0, 1, 1])
EXPECTED = {"euclidean": (1.0044673, 0.1190142), "euclidean_squared": (0.86, 0.05), "cosine": (1.0221087, 0.15)}


def embeddings(dtype=torch.float64, requires_grad=False):
    return torch.tensor(HR + LR, dtype=dtype, requires_grad=requires_grad)


@pytest.mark.parametrize("metric", METRICS)
def test_reference_vectors(metric):
    all_terms, hhh_only = EXPECTED[metric]
    assert octuplet_loss(embeddings(), LABELS, metric=metric).item() == pytest.approx(all_terms, abs=1e-6)
    assert octuplet_loss(embeddings(), LABELS, metric=metric,
                         terms=[True, False, False, False]).item() == pytest.approx(hhh_only, abs=1e-6)
    assert OctupletLoss(metric=metric)(embeddings(), LABELS).item() == pytest.approx(all_terms, abs=1e-6)


def test_reference_per_anchor_euclidean_terms():
    terms = octuplet_terms(embeddings(), LABELS)
    expected = {"hh": [0, 0.238028, 0.238028, 0], "hl": [0.066931, 0.233133, 0.153448, 0.265363],
                "lh": [0, 0.5, 0.822443, 0], "ll": [0.098685, 0.5, 0.591303, 0.310505]}
    for name, values in expected.items():
        np.testing.assert_allclose(terms[name].numpy(), values, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_flow_for_every_metric(metric, dtype):
    e = embeddings(dtype, requires_grad=True)
    octuplet_loss(e, LABELS, metric=metric).backward()  # the reference raises here for the euclidean metrics
    assert torch.isfinite(e.grad).all()
    assert e.grad.abs().sum() > 0


def test_identical_embeddings_give_finite_gradients():
    e = torch.ones(8, 4, requires_grad=True)  # every distance exactly 0: the sqrt guard
    octuplet_loss(e, LABELS).backward()
    assert torch.isfinite(e.grad).all()


def test_hr_and_lr_copies_are_never_positives():
    # Identity 0 = images 0, 1 at (0, 0), (10, 0); identity 1 = images 2, 3 at (0, 5), (10, 5). Each LR copy is 10
    # from its own HR image but equal to the other HR image of its identity; the nearest negative is at 5. With
    # (HR_i, LR_i) as a positive the cross terms would be 10 - 5 + 0.5 = 5.5; as they are not, they are 0.
    hr = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [10.0, 5.0]])
    lr = hr[[1, 0, 3, 2]].clone()
    terms = octuplet_terms(torch.cat([hr, lr]), LABELS)
    assert torch.equal(terms["hl"], torch.zeros(4))
    assert torch.equal(terms["lh"], torch.zeros(4))
    same = LABELS.unsqueeze(0) == LABELS.unsqueeze(1)
    wrong = batch_hard_triplet(pairwise_distances(hr, lr), same, ~same, 0.5)  # diagonal counted as positive
    np.testing.assert_allclose(wrong.numpy(), [5.5] * 4, atol=1e-5)


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="unknown metric"):
        octuplet_loss(embeddings(), LABELS, metric="manhattan")
    with pytest.raises(ValueError, match="at least one"):
        octuplet_loss(embeddings(), LABELS, terms=[False] * 4)
    with pytest.raises(ValueError, match=r"\(2B, D\)"):
        octuplet_loss(embeddings()[:7], LABELS)


def test_bad_finetuner_params_are_clear():
    with pytest.raises(ParamsError, match="k >= 2"):
        build_params(OctupletParams, {"k": 1}, owner="finetuner 'octuplet'")
    backbone = lrfr_plugins.create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4])
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=4, images_per_identity=4)
    context = FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False)
    with pytest.raises(ParamsError, match=r"head_weight=0.5 keeps the margin head's loss, but no trained head"):
        Octuplet(OctupletParams(steps=1, p=2, k=2, head_weight=0.5)).run(context)
    with pytest.raises(ParamsError, match=r"freeze: \['layer1'\] match no parameter.*'features'"):
        Octuplet(OctupletParams(steps=1, p=2, k=2, freeze=["features", "layer1"])).run(context)
    with pytest.raises(ParamsError, match=r"freeze: \['features', 'tail'\] freezes every parameter"):
        Octuplet(OctupletParams(steps=1, p=2, k=2, freeze=["features", "tail"])).check(backbone)
    with pytest.raises(DataError, match=r"octuplet: p=5 identities per batch, but only 4 identities"):
        Octuplet(OctupletParams(steps=1, p=5, k=2)).run(context)


def test_a_corrupt_image_that_the_dataset_skips_is_left_out_of_the_batch(tmp_path):
    """skip_corrupt makes the dataset return None for an unreadable image: the batch goes on without it."""
    from PIL import Image

    source = lrfr_plugins.create("dataset", "synthetic", num_identities=4, images_per_identity=4)
    for i in range(len(source)):
        folder = tmp_path / f"id{i // 4}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(source[i][0].permute(1, 2, 0).numpy()).save(folder / f"{i % 4}.png")
    (tmp_path / "id1" / "2.png").write_bytes(b"not a png")
    dataset = lrfr_plugins.create("dataset", "image-folder", root=str(tmp_path), skip_corrupt=True)
    assert dataset[6] is None and dataset.labels().tolist() == [i // 4 for i in range(16)]
    backbone = lrfr_plugins.create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4])
    context = FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False)
    metrics = Octuplet(OctupletParams(steps=8, p=2, k=2, eval_identities=2)).run(context)
    assert metrics["steps"] == 8 and metrics["epochs_started"] >= 2  # every training image was drawn


def test_a_diverging_loss_is_the_same_lrfr_error_as_in_training(monkeypatch):
    from lrfr_plugins.builtin.finetuners import octuplet

    monkeypatch.setattr(octuplet, "octuplet_loss", lambda e, *a, **k: e.sum() * float("nan"))
    backbone = lrfr_plugins.create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4])
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=4, images_per_identity=4)
    context = FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False)
    with pytest.raises(NonFiniteLossError, match=r"octuplet: the loss is nan at step 1\. Lower finetune.N.params.lr"):
        Octuplet(OctupletParams(steps=2, p=2, k=2)).run(context)


def test_a_freeze_typo_stops_the_run_before_training(tmp_path, registry, monkeypatch):
    import textwrap

    from lrfr_plugins.engine.trainer import Trainer
    from lrfr_plugins.recipe import load_recipe
    from lrfr_plugins.runner import execute, prepare_run_dir

    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("training started"))
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""
        lrfr: 1
        name: typo
        data: {name: synthetic, params: {num_identities: 4, images_per_identity: 4}}
        backbone: {name: tiny, params: {embedding_size: 8, widths: [4, 4, 4, 4]}}
        head: {name: arcface}
        train: {epochs: 1, batch_size: 8, threads: 1}
        finetune:
          - {name: octuplet, params: {steps: 2, p: 2, k: 2, freeze: [features.0]}}
          - {name: distill, params: {steps: 2, freeze: [feature.1, tail]}}
        eval: []
        export: {onnx: false}
        """))
    recipe = load_recipe(path, registry=registry)
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    with pytest.raises(ParamsError) as info:
        execute(recipe, registry, tmp_path / "run", progress=False)
    message = str(info.value)
    assert message.startswith("1 finetune parameter(s) of recipe 'typo' do not fit the backbone; nothing was trained")
    assert "finetune.1.params.freeze (distill): ['feature.1'] match no parameter" in message
    assert "Did you mean 'features.1'?" in message and "finetune.0" not in message
    assert not (tmp_path / "run" / "recipe.resolved.yaml").exists()


def test_freeze_keeps_the_frozen_stage_unchanged():
    torch.manual_seed(0)
    backbone = lrfr_plugins.create("backbone", "tiny", embedding_size=8, widths=[4, 4, 4, 4])
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=4, images_per_identity=4)
    before = {n: t.detach().clone() for n, t in backbone.state_dict().items()}
    context = FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False)
    Octuplet(OctupletParams(steps=2, p=2, k=2, lr=0.1, freeze=["features.0", "features.1"])).run(context)
    after = backbone.state_dict()
    for name in ("features.0.weight", "features.1.weight", "features.1.bias", "features.1.running_mean"):
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["tail.2.weight"], after["tail.2.weight"])
    assert all(t.requires_grad for t in backbone.parameters())  # flags restored


def test_finetune_lowers_the_loss_and_raises_the_lr_hr_cosine():
    torch.manual_seed(0)
    backbone = lrfr_plugins.create("backbone", "tiny", embedding_size=16, widths=[4, 8, 8, 16])
    dataset = lrfr_plugins.create("dataset", "synthetic", num_identities=12, images_per_identity=10)
    # Batch-hard triplets from a random network collapse; finetuning starts from a trained one: a short HR-only
    # softmax pre-training gives it.
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.arange(len(dataset)) // 10
    classifier = torch.nn.Linear(16, 12)
    optimizer = torch.optim.AdamW(list(backbone.parameters()) + list(classifier.parameters()), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    backbone.train()
    for _ in range(40):
        idx = torch.randint(len(dataset), (32,), generator=generator)
        logits = classifier(F.normalize(backbone(to_network_input(images[idx])), dim=1)) * 10
        loss = F.cross_entropy(logits, labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    backbone.eval()
    context = FinetuneContext(backbone, dataset, [], torch.device("cpu"), torch.Generator().manual_seed(0), False)
    metrics = Octuplet(OctupletParams(steps=40, p=6, k=4, lr=1e-3, optimizer="adamw")).run(context)
    print(metrics)
    assert metrics["steps"] == 40 and metrics["held_out_disjoint"]
    assert not backbone.training  # the mode it was given back in
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert metrics["lr_hr_cosine_after"] > metrics["lr_hr_cosine_before"]
