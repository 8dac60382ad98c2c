"""ArcFace against arcface_torch's values (REFERENCE.md §12), the fallback, gradient modes and autocast."""

import math

import pytest
import torch
import torch.nn.functional as F

COS = torch.tensor([[0.60, 0.80, 0.00, 0.00],
                    [0.00, 0.28, 0.96, 0.00],
                    [0.80, 0.00, 0.00, 0.60],
                    [0.36, 0.48, 0.64, 0.48]])
LABELS = torch.tensor([0, 2, 3, 1])


@pytest.fixture
def arcface(registry):
    return lambda **kw: registry.create("head", "arcface", **kw)


@pytest.mark.parametrize("gradient", ["exact", "detached"])
def test_matches_arcface_torch_reference_values(arcface, gradient):
    logits = arcface(gradient=gradient)(COS, LABELS)
    target = logits[torch.arange(4), LABELS]
    assert target.tolist() == pytest.approx([9.152583, 45.327367, 9.152583, 0.041902], abs=1e-4)
    assert F.cross_entropy(logits, LABELS).item() == pytest.approx(31.253242, abs=1e-4)
    mask = torch.ones_like(COS, dtype=torch.bool)
    mask[torch.arange(4), LABELS] = False
    assert torch.allclose(logits[mask], 64 * COS[mask])


def test_label_minus_one_rows_are_only_scaled(arcface):
    cos = torch.tensor([[0.7, 0.1, -0.2, 0.05], [0.3, -0.4, 0.9, 0.0], [-0.95, 0.2, 0.1, 0.6]])
    logits = arcface()(cos, torch.tensor([[0], [2], [-1]]))  # arcface_torch passes (N, 1)
    assert logits[0, 0].item() == pytest.approx(17.403490, abs=1e-4)
    assert logits[1, 2].item() == pytest.approx(37.174240, abs=1e-4)
    assert torch.allclose(logits[2], 64 * cos[2])


def test_gradient_modes(arcface):
    c = COS.clone().requires_grad_()
    arcface(gradient="detached")(c, LABELS).sum().backward()
    assert torch.allclose(c.grad, torch.full_like(c, 64.0))  # arcface_torch's pseudo-gradient
    c = COS.clone().requires_grad_()
    arcface(gradient="exact")(c, LABELS).sum().backward()
    m = 0.5
    for i, j in enumerate(LABELS.tolist()):
        x = COS[i, j].item()
        expected = 64 * (math.cos(m) + math.sin(m) * x / math.sqrt(1 - x * x))
        assert c.grad[i, j].item() == pytest.approx(expected, rel=1e-4)


def test_th_mm_fallback_keeps_the_target_monotone(arcface):
    c = torch.linspace(-1, 1, 2001)[:, None]
    labels = torch.zeros(2001, dtype=torch.long)
    target = arcface(scale=1.0)(c, labels)[:, 0]
    assert (target[1:] - target[:-1] >= -1e-6).all()
    # At c = -0.95 (theta + m > pi): th/mm gives c - sin(m)*m, arcface_torch's 'none' gives cos(theta+m).
    at = torch.tensor([[-0.95]])
    assert arcface(scale=1.0)(at, torch.tensor([0])).item() == pytest.approx(-0.95 - math.sin(0.5) * 0.5, abs=1e-6)
    assert arcface(scale=1.0, fallback="none")(at, torch.tensor([0])).item() == pytest.approx(-0.9834, abs=1e-4)


def test_easy_margin_leaves_negative_cosines(arcface):
    out = arcface(scale=1.0, easy_margin=True)(torch.tensor([[-0.3], [0.6]]), torch.tensor([0, 0]))
    assert out[0, 0].item() == pytest.approx(-0.3)
    assert out[1, 0].item() == pytest.approx(math.cos(math.acos(0.6) + 0.5), abs=1e-6)
