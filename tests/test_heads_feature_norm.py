"""AdaFace and MagFace (quality = the feature norm) against REFERENCE.md §12, and the trainer's norm plumbing."""

import textwrap

import pytest
import torch
import torch.nn.functional as F

from lrfr_plugins.recipe import load_recipe
from lrfr_plugins.runner import execute, prepare_run_dir
from test_heads_margins import COS, LABELS, targets  # REFERENCE.md §12's common input

NORMS = torch.tensor([10.0, 20.0, 30.0, 40.0])  # the feature norms REFERENCE.md §12 uses with its cosines


# ------------------------------------------------------------------------------------------------- AdaFace
def test_adaface_batch_statistics_match_head_py(registry):
    head = registry.create("head", "adaface", t_alpha=1.0)  # each batch's own mean/std
    logits = head(COS, LABELS, NORMS)
    assert head.batch_mean.item() == pytest.approx(25.0)
    assert head.batch_std.item() == pytest.approx(12.909944, abs=1e-5)  # unbiased std
    assert targets(logits).tolist() == pytest.approx([14.353528, 38.135682, 12.087473, 3.502697], abs=1e-5)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(28.354084, abs=1e-5)
    mask = torch.ones_like(COS, dtype=torch.bool)
    mask[torch.arange(4), LABELS] = False
    assert torch.allclose(logits[mask], 64 * COS[mask])


def test_adaface_ema_from_fresh_buffers_matches_training_settings(registry):
    head = registry.create("head", "adaface")  # t_alpha 0.01: buffers start at 20 / 100 and move 1%
    assert head.params.t_alpha == 0.01 and head.params.margin == 0.4 and head.params.h == 0.333
    logits = head(COS, LABELS, NORMS)
    assert head.batch_mean.item() == pytest.approx(20.05, abs=1e-5)
    assert head.batch_std.item() == pytest.approx(99.129099, abs=1e-4)
    assert targets(logits).tolist() == pytest.approx([12.969372, 35.843096, 12.625415, 4.898222], abs=1e-5)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(28.216757, abs=1e-5)


def test_adaface_limits_are_cosface_and_arcface(registry):
    cosface = registry.create("head", "cosface", margin=0.4)(COS, LABELS)
    arcface = registry.create("head", "arcface", margin=0.4)(COS, LABELS)
    flat = registry.create("head", "adaface", h=0.0)  # z = 0 everywhere: CosFace(m)
    assert torch.allclose(flat(COS, LABELS, NORMS), cosface, atol=1e-4)
    low = registry.create("head", "adaface", t_alpha=1.0, h=100.0)  # z = -1 for the lowest norm: ArcFace(m)
    assert targets(low(COS, LABELS, NORMS))[0].item() == pytest.approx(targets(arcface)[0].item(), abs=1e-4)


def test_adaface_updates_statistics_in_eval_mode_before_use_and_saves_them(registry):
    head = registry.create("head", "adaface").eval()
    head(COS, LABELS, NORMS)
    assert head.batch_mean.item() == pytest.approx(20.05, abs=1e-5)  # the reference updates in eval mode too
    state = head.state_dict()
    assert set(state) == {"batch_mean", "batch_std"}  # saved with the checkpoint, so a resumed run continues
    fresh = registry.create("head", "adaface")
    fresh.load_state_dict(state)
    assert fresh.batch_mean.item() == pytest.approx(20.05, abs=1e-5)


def test_adaface_detaches_the_norm_and_survives_a_single_image(registry):
    head = registry.create("head", "adaface")
    norms = NORMS.clone().requires_grad_(True)
    cos = COS.clone().requires_grad_(True)
    F.cross_entropy(head(cos, LABELS, norms), LABELS).backward()
    assert norms.grad is None and torch.isfinite(cos.grad).all() and cos.grad.abs().sum() > 0
    std_before = head.batch_std.clone()
    logits = head(COS[:1], LABELS[:1], NORMS[:1])  # unbiased std of one value is NaN: sigma is left alone
    assert torch.isfinite(logits).all() and torch.equal(head.batch_std, std_before)


def test_adaface_pseudo_gradient_mode(registry):
    exact = registry.create("head", "adaface", t_alpha=1.0)
    detached = registry.create("head", "adaface", t_alpha=1.0, gradient="detached")
    cos_a, cos_b = COS.clone().requires_grad_(True), COS.clone().requires_grad_(True)
    la, lb = exact(cos_a, LABELS, NORMS), detached(cos_b, LABELS, NORMS)
    assert torch.allclose(la, lb, atol=1e-5)  # same forward values
    lb.sum().backward()
    assert torch.allclose(cos_b.grad, torch.full_like(COS, 64.0))  # margin added under no_grad
    la.sum().backward()
    assert not torch.allclose(cos_a.grad, cos_b.grad)


@pytest.mark.parametrize("name", ["adaface", "magface"])
def test_norm_heads_say_what_quality_they_need(registry, name):
    with pytest.raises(ValueError, match=rf"head '{name}' needs quality \(N,\): the norm of each raw"):
        registry.create("head", name)(COS, LABELS)
    with pytest.raises(ValueError, match=rf"head '{name}' got 3 qualities for 4 rows"):
        registry.create("head", name)(COS, LABELS, NORMS[:3])


# ------------------------------------------------------------------------------------------------- MagFace
def test_magface_matches_maglinear_and_magloss(registry):
    head = registry.create("head", "magface")
    assert head.margin(NORMS).tolist() == pytest.approx([0.45, 0.485, 0.52, 0.555], abs=1e-6)
    logits = head(COS, LABELS, NORMS)
    assert targets(logits).tolist() == pytest.approx([12.306933, 45.999975, 7.883993, -3.476387], abs=1e-5)
    loss_id = F.cross_entropy(logits, LABELS)
    assert loss_id.item() == pytest.approx(31.661374, abs=1e-5)
    assert head.regulariser(NORMS).item() == pytest.approx(0.054149, abs=1e-6)
    assert (loss_id + head.extra_loss()).item() == pytest.approx(33.556605, abs=1e-5)  # lambda_g = 35


def test_magface_gradient_flows_through_the_norm_and_stops_outside_the_clamp(registry):
    head = registry.create("head", "magface")
    norms = torch.tensor([5.0, 20.0, 30.0, 200.0], requires_grad=True)  # first and last clamped to [10, 110]
    (F.cross_entropy(head(COS, LABELS, norms), LABELS) + head.extra_loss()).backward()
    assert norms.grad[0] == 0 and norms.grad[3] == 0
    assert (norms.grad[1:3] != 0).all()


def test_magface_easy_margin_leaves_negative_cosines_and_warns_below_the_lambda_bound(registry):
    head = registry.create("head", "magface")
    cos = torch.tensor([[-0.3, 0.2]])
    assert head(cos, torch.tensor([0]), torch.tensor([50.0]))[0, 0].item() == pytest.approx(-0.3 * 64)
    assert head.params.min_lambda_g() == pytest.approx(22.59, abs=0.01)
    with pytest.warns(UserWarning, match=r"lambda_g = 20.0 is below .* = 22.59"):
        registry.create("head", "magface", lambda_g=20.0)


# -------------------------------------------------------------------------------------------- feature-norm
def test_feature_norm_quality_keeps_the_gradient(registry):
    quality = registry.create("quality", "feature-norm")
    assert quality.uses_embeddings
    emb = torch.tensor([[3.0, 4.0], [0.0, 2.0]], requires_grad=True)
    q = quality(torch.zeros(2, 3, 112, 112, dtype=torch.uint8), embeddings=emb)
    assert q.tolist() == [5.0, 2.0]
    q.sum().backward()
    assert torch.allclose(emb.grad, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="needs the backbone's raw embeddings"):
        quality(torch.zeros(2, 3, 112, 112, dtype=torch.uint8))


RECIPE = """
lrfr: 1
name: norm-heads
seed: 0
data: {{name: synthetic, params: {{num_identities: 6, images_per_identity: 4}}}}
backbone: {{name: tiny, params: {{embedding_size: 16, widths: [4, 4, 4, 4]}}}}
head: {{name: {head}}}
degradations: [{{name: cross-resolution}}]
train: {{epochs: 1, batch_size: 8, threads: 1, optimizer: {{name: sgd, lr: 0.01}}}}
eval: []
export: {{onnx: false}}
"""


@pytest.mark.parametrize("name", ["adaface", "magface"])
def test_training_feeds_the_feature_norm_to_the_head(tmp_path, registry, name, monkeypatch):
    from lrfr_plugins.builtin.heads.magface import MagFace

    regularisers = []
    original = MagFace.extra_loss
    monkeypatch.setattr(MagFace, "extra_loss", lambda self: regularisers.append(original(self)) or regularisers[-1])
    path = tmp_path / "norm.yaml"
    path.write_text(textwrap.dedent(RECIPE.format(head=name)))
    recipe = load_recipe(path, registry=registry)
    assert recipe.data["quality"]["name"] == "feature-norm"  # the heads' default, written into the recipe
    prepare_run_dir(tmp_path / "run", overwrite=False, resume=False)
    result = execute(recipe, registry, tmp_path / "run", progress=False)
    assert result.metrics["train"]["steps"] == 3
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    if name == "adaface":  # three EMA updates moved the buffers off their initial 20 / 100
        assert state["head"]["batch_mean"].item() != 20.0 and state["head"]["batch_std"].item() != 100.0
    else:  # the trainer added lambda_g * mean g(a), a differentiable term, at every step
        assert len(regularisers) == 3 and all(r.requires_grad and r.item() > 0 for r in regularisers)
