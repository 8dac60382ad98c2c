"""The shared down/up resize and the cross-resolution degradation built on it."""

import pytest
import torch
import torch.nn.functional as F

from lrfr_plugins.ops.resize import resize_down_up


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 112, 112), generator=g, dtype=torch.uint8)


def test_full_size_is_a_no_op_and_small_sizes_lose_detail():
    x = batch()
    assert torch.equal(resize_down_up(x, 112), x)
    errors = [(resize_down_up(x, s).float() - x.float()).abs().mean().item() for s in (56, 28, 14, 7)]
    assert errors == sorted(errors) and errors[0] > 0


def test_bilinear_without_antialias_matches_a_manual_interpolate():
    x = batch(2)
    small = F.interpolate(x.float(), size=(16, 16), mode="bilinear", align_corners=False, antialias=False)
    big = F.interpolate(small.round().clamp(0, 255), size=(112, 112), mode="bilinear", align_corners=False)
    assert torch.equal(resize_down_up(x, 16), big.round().clamp(0, 255).to(torch.uint8))


def test_per_image_sizes():
    x = batch(3)
    out = resize_down_up(x, [112, 14, 7])
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], resize_down_up(x[1:2], 14)[0])
    assert torch.equal(out[2], resize_down_up(x[2:3], 7)[0])


def test_bad_inputs():
    with pytest.raises(TypeError, match="expected a uint8 batch"):
        resize_down_up(torch.zeros(1, 3, 112, 112), 16)
    with pytest.raises(ValueError, match="got 2 sizes for 3 images"):
        resize_down_up(batch(3), [7, 14])
    with pytest.raises(ValueError, match="unknown resize mode 'cubic'"):
        resize_down_up(batch(1), 7, down="cubic")


def test_cross_resolution_degrades_exactly_half_and_reports_which(registry):
    deg = registry.create("degradation", "cross-resolution")
    x = batch(8)
    out = deg(x, torch.Generator().manual_seed(1))
    assert out.lr_mask.sum().item() == 4
    assert torch.equal(out.images[~out.lr_mask], x[~out.lr_mask])
    assert torch.equal(out.images[out.lr_mask], resize_down_up(x[out.lr_mask], 16))
    again = deg(x, torch.Generator().manual_seed(1))
    assert torch.equal(again.images, out.images) and torch.equal(again.lr_mask, out.lr_mask)


def test_cross_resolution_sizes_and_bernoulli_mode(registry):
    deg = registry.create("degradation", "cross-resolution", sizes=[7, 14, 28], exact_fraction=False, lr_fraction=1.0)
    x = batch(6)
    out = deg(x, torch.Generator().manual_seed(0))
    assert out.lr_mask.all()
    for img, orig in zip(out.images, x):
        assert any(torch.equal(img, resize_down_up(orig[None], s)[0]) for s in (7, 14, 28))
