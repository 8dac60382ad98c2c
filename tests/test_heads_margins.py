"""CosFace, combined and Approach 1 against REFERENCE.md §12 values and hand-computed formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

COS = torch.tensor([[0.60, 0.80, 0.00, 0.00],
                    [0.00, 0.28, 0.96, 0.00],
                    [0.80, 0.00, 0.00, 0.60],
                    [0.36, 0.48, 0.64, 0.48]])
LABELS = torch.tensor([0, 2, 3, 1])
TARGETS = torch.tensor([0.60, 0.96, 0.60, 0.48])


def targets(logits):
    return logits[torch.arange(4), LABELS]


def non_targets_scaled(logits, scale):
    mask = torch.ones_like(COS, dtype=torch.bool)
    mask[torch.arange(4), LABELS] = False
    return torch.allclose(logits[mask], scale * COS[mask])


def test_cosface_matches_arcface_torch(registry):
    logits = registry.create("head", "cosface")(COS, LABELS)
    assert targets(logits).tolist() == pytest.approx([12.8, 35.84, 12.8, 5.12], abs=1e-5)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(28.160009, abs=1e-5)
    assert non_targets_scaled(logits, 64.0)


def test_combined_computes_the_whole_formula_where_arcface_torch_drops_m2(registry):
    logits = registry.create("head", "combined", m1=1.0, m2=0.3, m3=0.2)(COS, LABELS)
    expected = [64 * (math.cos(math.acos(c) + 0.3) - 0.2) for c in TARGETS.tolist()]
    assert targets(logits).tolist() == pytest.approx(expected, abs=1e-4)
    # arcface_torch's CombinedMarginLoss(64, 1, 0.3, 0.2) gives CosFace 0.2 here: 25.6, 48.64, 25.6, 17.92.
    assert targets(logits)[0].item() != pytest.approx(25.6, abs=0.1)
    assert non_targets_scaled(logits, 64.0)


def test_combined_presets_reduce_to_arcface_and_cosface(registry):
    arc = registry.create("head", "combined", m1=1.0, m2=0.5, m3=0.0, fallback="th_mm")(COS, LABELS)
    assert torch.allclose(arc, registry.create("head", "arcface")(COS, LABELS), atol=1e-4)
    cos = registry.create("head", "combined", m1=1.0, m2=0.0, m3=0.4)(COS, LABELS)
    assert torch.allclose(cos, registry.create("head", "cosface")(COS, LABELS), atol=1e-4)


def test_combined_multiplicative_margin_with_monotone_psi_continuation(registry):
    head = registry.create("head", "combined", m1=1.7, m2=0.0, m3=0.0, scale=1.0)
    c = torch.linspace(-1, 1, 4001)[:, None]
    target = head(c, torch.zeros(4001, dtype=torch.long))[:, 0]
    assert (target[1:] - target[:-1] >= -1e-5).all()  # monotone in the cosine over the whole range
    theta = math.acos(0.36)
    assert head(torch.tensor([[0.36]]), torch.tensor([0])).item() == pytest.approx(math.cos(1.7 * theta), abs=1e-5)
    # Past 1.7*theta > pi: psi = -cos(1.7 theta) - 2 (k = 1), continuous with -1 at the boundary.
    theta = math.acos(-0.8)
    assert head(torch.tensor([[-0.8]]), torch.tensor([0])).item() == pytest.approx(-math.cos(1.7 * theta) - 2, abs=1e-5)


def test_combined_rejects_th_mm_for_multiplicative_margins(registry):
    from lrfr_plugins.errors import ParamsError

    with pytest.raises(ParamsError, match=r"fallback 'th_mm' needs m1 = 1 \(got m1 = 1.5\); use fallback 'psi'"):
        registry.create("head", "combined", m1=1.5, fallback="th_mm")


def test_approach1_matches_the_studys_adaptive_arcface(registry):
    head = registry.create("head", "approach1")
    quality = torch.tensor([1.0, 0.0, 1.0, 0.0])  # HR, LR, HR, LR -> margins 0.35, 0.5, 0.35, 0.5
    logits = head(COS, LABELS, quality)
    assert targets(logits).tolist() == pytest.approx([18.515544, 45.327367, 18.515544, 0.041902], abs=1e-4)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(26.571761, abs=1e-5)
    assert non_targets_scaled(logits, 64.0)


def test_approach1_without_quality_says_what_it_needs(registry):
    with pytest.raises(ValueError, match=r"head 'approach1' needs quality \(N,\): 1 for full-resolution images"):
        registry.create("head", "approach1")(COS, LABELS)


def test_resolution_flag_quality(registry):
    flag = registry.create("quality", "resolution-flag")
    images = torch.zeros(3, 3, 112, 112, dtype=torch.uint8)
    assert flag(images, lr_mask=torch.tensor([True, False, True])).tolist() == [0.0, 1.0, 0.0]
    assert flag(images).tolist() == [1.0, 1.0, 1.0]


def test_approach1_resolves_its_default_quality_in_a_recipe(tmp_path, registry):
    from lrfr_plugins.recipe import load_recipe

    path = tmp_path / "a1.yaml"
    path.write_text("data: {name: synthetic}\nbackbone: {name: tiny}\nhead: {name: approach1}\n")
    assert load_recipe(path, registry=registry).data["quality"]["name"] == "resolution-flag"


def test_approach2_reciprocal_matches_the_studys_values(registry):
    head = registry.create("head", "approach2")
    quality = torch.tensor([15.721, 2.317, 15.721, 2.317])  # the slides' HR and LR mean Laplacian
    logits = head(COS, LABELS, quality)
    assert targets(logits).tolist() == pytest.approx([35.067746, 48.309739, 35.067746, 4.416464], abs=1e-4)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(17.202020, abs=1e-5)


def test_approach2_margins_reciprocal_guard_and_bounded_mapping(registry):
    from lrfr_plugins.builtin.heads.approach2 import approach2_margin

    reciprocal = registry.create("head", "approach2").params
    assert approach2_margin(torch.tensor([15.721, 2.317, 0.0]), reciprocal).tolist() == pytest.approx(
        [1 / 15.721, 1 / 2.317, 3.0], abs=1e-6)  # a flat image is floored at q = 1/3, not infinity
    bounded = registry.create("head", "approach2", mapping="bounded").params
    q = torch.tensor([0.0, 2.317, 6.035, 15.721, 1e6])
    m = approach2_margin(q, bounded)
    assert m.tolist() == pytest.approx([0.5, 0.35 + 0.15 / (1 + (2.317 / 6.035) ** 2), 0.425,
                                        0.35 + 0.15 / (1 + (15.721 / 6.035) ** 2), 0.35], abs=1e-6)
    assert (m[1:] <= m[:-1]).all()  # lower quality, larger margin


def test_approach2_uses_the_laplacian_by_default(tmp_path, registry):
    from lrfr_plugins.recipe import load_recipe

    path = tmp_path / "a2.yaml"
    path.write_text("data: {name: synthetic}\nbackbone: {name: tiny}\nhead: {name: approach2}\n")
    assert load_recipe(path, registry=registry).data["quality"] == {
        "name": "laplacian", "params": {"reduce": "mean_abs"},
        "provider": {"distribution": "lrfr-plugins", "version": "0.1.0"}}


def test_sphereface_r_matches_opensphere(registry):
    head = registry.create("head", "sphereface")
    logits = head(COS, LABELS)
    assert (targets(logits) / 30).tolist() == pytest.approx([-0.0056, 0.8859, -0.0056, -0.2459], abs=1e-4)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(18.730411, abs=1e-5)
    assert non_targets_scaled(logits, 30.0)
    c = COS.clone().requires_grad_()
    head(c, LABELS).sum().backward()
    assert torch.allclose(c.grad, torch.full_like(c, 30.0))  # SphereFace-R's gradient detachment


def test_sphereface_annealing_follows_the_caffe_schedule(registry):
    head = registry.create("head", "sphereface", anneal=True).train()
    plain = registry.create("head", "sphereface")
    logits = head(COS, LABELS)  # iteration 1: lambda = 1000 / 1.12
    lam = 1000 / 1.12
    expected = (lam * 30 * TARGETS + targets(plain(COS, LABELS))) / (1 + lam)
    assert torch.allclose(targets(logits), expected, atol=1e-4)
    for _ in range(5000):
        head.iteration += 1
    assert head.current_lambda() == 5.0  # floored at lambda_min
    assert "iteration" in head.state_dict()  # saved with the checkpoint
    head.eval()
    before = int(head.iteration)
    head(COS, LABELS)
    assert int(head.iteration) == before  # evaluation does not advance the schedule


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_head_is_finite_at_plus_minus_one_under_autocast(registry, dtype):
    for name in registry.names("head"):
        head = registry.create("head", name)
        cos = torch.tensor([[1.0], [-1.0], [1.0]], requires_grad=True)
        quality = torch.tensor([1.0, 0.0, 5.0]) if head.needs_quality else None
        with torch.autocast("cpu", dtype=dtype):
            logits = head(cos.to(dtype), torch.tensor([0, 0, -1]), quality)
            loss = F.cross_entropy(logits, torch.tensor([0, 0, 0]))
        loss.backward()
        assert torch.isfinite(logits).all() and torch.isfinite(cos.grad).all(), name


def test_every_head_that_needs_quality_says_so_when_it_is_missing(registry):
    needing = [name for name in registry.names("head") if registry.create("head", name).needs_quality]
    assert {"approach1", "approach2", "adaface", "magface"} <= set(needing)
    for name in needing:
        head = registry.create("head", name)
        assert head.default_quality in registry.names("quality"), name
        with pytest.raises(ValueError, match=rf"head '{name}' needs quality \(N,\)"):
            head(COS, LABELS)
