"""The study's degradation equals cv2 INTER_LINEAR bit for bit (cv2 is optional: skipped without it).

Bilinear without anti-aliasing from uint8 to uint8, rounded to nearest (the ``lozhkina`` training preset and the
``lozhkina`` / ``insightface`` protocol presets), is cv2's 11-bit fixed-point arithmetic in torch
(``lrfr_plugins.ops.resize._bilinear_cv2``), which hands CPU batches to cv2 itself where it is installed. Every test
here but the last runs the torch arithmetic (the cv2 shortcut switched off) against cv2; the last checks that the
shortcut and the arithmetic agree. Asserted: 0 differing pixels, down and up separately and the whole
down+up, at every size the presets and protocols use and at sizes that do not divide 112, on square and non-square
inputs.
"""

import numpy as np
import pytest
import torch

from lrfr_plugins.ops import resize as resize_module
from lrfr_plugins.ops.resize import _bilinear_cv2, resize_down_up

cv2 = pytest.importorskip("cv2")

@pytest.fixture(autouse=True)
def torch_arithmetic(monkeypatch):
    """Test lrfr's own fixed-point arithmetic, not cv2 against itself: switch off the cv2 shortcut."""
    monkeypatch.setattr(resize_module, "_opencv", lambda: None)


#: the presets' and protocols' sizes, then sizes that do not divide 112 (and 1, 96 = a side of 112 x 96)
SIZES = (7, 14, 16, 28, 56, 12, 20, 21, 24, 36, 45, 100, 1, 5, 13, 96, 111)


def noise(n=4, shape=(112, 112), seed=0):
    return torch.randint(0, 256, (n, 3, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def faces(n=4):
    from lrfr_plugins.synthetic import SyntheticFaceGenerator

    return torch.from_numpy(SyntheticFaceGenerator(0, "test").render(np.arange(n), np.arange(n))).permute(
        0, 3, 1, 2).contiguous()


def cv2_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per image cv2.resize(..., (w, h), INTER_LINEAR) of a uint8 (N, C, H, W) batch."""
    out = [cv2.resize(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), (w, h), interpolation=cv2.INTER_LINEAR)
           for img in x]
    return torch.from_numpy(np.stack([o.reshape(h, w, -1) for o in out])).permute(0, 3, 1, 2).contiguous()


def differing(a: torch.Tensor, b: torch.Tensor) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
    return int((a != b).sum())


IMAGES = {"noise": lambda: noise(4), "faces": lambda: faces(4), "noise-112x96": lambda: noise(3, (112, 96), 1),
          "noise-96x112": lambda: noise(3, (96, 112), 2)}


@pytest.mark.parametrize("kind", list(IMAGES))
def test_each_step_and_the_whole_degradation_equal_cv2(kind):
    x = IMAGES[kind]()
    height, width = x.shape[-2:]
    for s in SIZES:
        small = cv2_resize(x, s, s)
        assert differing(_bilinear_cv2(x, (s, s)), small) == 0, ("down", s)
        assert differing(_bilinear_cv2(small, (height, width)), cv2_resize(small, height, width)) == 0, ("up", s)
        if s < height or s < width:
            assert differing(resize_down_up(x, s), cv2_resize(small, height, width)) == 0, ("down+up", s)


def test_non_square_targets_and_odd_inputs():
    x = noise(2, (37, 53), 3)
    for h, w in ((7, 9), (16, 112), (112, 16), (53, 37), (37, 100), (1, 1)):
        assert differing(_bilinear_cv2(x, (h, w)), cv2_resize(x, h, w)) == 0, (h, w)


def test_per_image_sizes_equal_cv2():
    x = faces(4)
    sizes = [7, 20, 16, 45]
    out = resize_down_up(x, sizes)
    for i, s in enumerate(sizes):
        assert differing(out[i:i + 1], cv2_resize(cv2_resize(x[i:i + 1], s, s), 112, 112)) == 0


def test_training_preset_gives_cv2_pixels(registry):
    """The lozhkina preset of the cross-resolution degradation (training) gives cv2's pixels for the chosen images."""
    x = torch.cat([faces(4), noise(4)])
    deg = registry.create("degradation", "cross-resolution", preset="lozhkina")
    out = deg(x, torch.Generator().manual_seed(0))
    assert out.lr_mask.sum() == 4
    assert torch.equal(out.images[~out.lr_mask], x[~out.lr_mask])
    chosen = x[out.lr_mask]
    assert differing(out.images[out.lr_mask], cv2_resize(cv2_resize(chosen, 16, 16), 112, 112)) == 0
    sized = registry.create("degradation", "cross-resolution", preset="lozhkina", sizes=[7, 21, 28, 56],
                            lr_fraction=1.0)(x, torch.Generator().manual_seed(1))
    for img, orig in zip(sized.images, x):
        assert any(differing(img[None], cv2_resize(cv2_resize(orig[None], s, s), 112, 112)) == 0
                   for s in (7, 21, 28, 56))


def test_protocol_presets_degrade_like_cv2():
    """The pair protocols' lozhkina and insightface presets call resize_down_up with these settings."""
    from lrfr_plugins.builtin.protocols.pairs import PRESETS

    x = faces(4)
    for name in ("lozhkina", "insightface"):
        p = PRESETS[name]
        for s in (7, 14, 16, 20, 28, 56):
            got = resize_down_up(x, s, down=p["down"], up=p["up"], antialias=p["antialias"], rounding=p["rounding"],
                                 quantize_lr=p["quantize_lr"])
            assert differing(got, cv2_resize(cv2_resize(x, s, s), 112, 112)) == 0, (name, s)


def test_other_settings_keep_the_float_path():
    """A float LR image or truncation is not cv2 (cv2 rounds uint8): those keep torch's float bilinear."""
    x = noise(2)
    cv = cv2_resize(cv2_resize(x, 20, 20), 112, 112)
    assert differing(resize_down_up(x, 20, quantize_lr=False), cv) > 0
    assert differing(resize_down_up(x, 20, rounding="truncate"), cv) > 0


def test_the_cv2_shortcut_and_the_torch_arithmetic_give_the_same_bytes(monkeypatch):
    images = torch.cat([noise(3), faces(3)])
    sizes = torch.tensor([7, 14, 16, 21, 45, 100])
    monkeypatch.undo()  # the shortcut back on (cv2 is installed here)
    assert resize_module._opencv() is not None
    by_cv2 = resize_down_up(images, sizes)
    grey = _bilinear_cv2(images[:2, :1], (20, 33))  # one channel: cv2 returns (h, w) for it
    monkeypatch.setattr(resize_module, "_opencv", lambda: None)
    assert differing(resize_down_up(images, sizes), by_cv2) == 0
    assert differing(_bilinear_cv2(images[:2, :1], (20, 33)), grey) == 0
