"""The Laplacian quality estimator: reference values, agreement with cv2, dtype and batch invariance."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrfr_plugins.builtin.quality.laplacian import KERNEL, Laplacian, LaplacianParams, laplacian, rgb_to_grey
from lrfr_plugins.ops.resize import resize_down_up
from lrfr_plugins.synthetic import SyntheticFaceGenerator

RTOL = 1e-6


def quality(reduce="mean_abs"):
    return Laplacian(LaplacianParams(reduce=reduce))


def nchw(hwc: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 numpy -> (N, 3, H, W) torch."""
    arr = hwc[None] if hwc.ndim == 3 else hwc
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def reference_image() -> np.ndarray:
    return ((np.arange(60).reshape(4, 5, 3) * 37) % 256).astype(np.uint8)


def random_images(n=4, seed=0, size=112) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def face_images() -> np.ndarray:
    return _faces().copy()


@functools.lru_cache(maxsize=1)
def _faces() -> np.ndarray:
    return SyntheticFaceGenerator(0, "test").render(np.arange(4), np.arange(4))


def degraded(images_nhwc: np.ndarray) -> np.ndarray:
    return resize_down_up(nchw(images_nhwc), 16).permute(0, 2, 3, 1).contiguous().numpy()


def cv2_qualities(images_nhwc: np.ndarray):
    cv2 = pytest.importorskip("cv2")
    mean_abs, var = [], []
    for img in images_nhwc:
        mean_abs.append(np.abs(cv2.Laplacian(img, cv2.CV_64F)).mean())
        grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        var.append(cv2.Laplacian(grey, cv2.CV_64F).var())
    return np.array(mean_abs), np.array(var)


def test_reference_values():
    img = reference_image()
    assert quality()(nchw(img)).item() == pytest.approx(307.533333, rel=RTOL)
    # REFERENCE.md's 61254.0275 is BGR2GRAY of the array read as BGR: RGB2GRAY of the channel-reversed array.
    assert quality("var")(nchw(img[..., ::-1])).item() == pytest.approx(61254.0275, rel=RTOL)
    assert quality()(nchw(random_images(1)[0])).item() == pytest.approx(277.127551, rel=RTOL)


@pytest.mark.parametrize("reduce", ["mean_abs", "var"])
def test_constant_image_has_zero_quality(reduce):
    q = quality(reduce)(torch.full((2, 3, 9, 7), 123, dtype=torch.uint8))
    assert q.dtype == torch.float32 and q.shape == (2,) and torch.all(q == 0)


def test_laplacian_equals_grouped_conv2d_with_reflect_padding():
    x = nchw(random_images(2, size=23)).float()
    kernel = torch.tensor(KERNEL).expand(3, 1, 3, 3)
    assert torch.equal(laplacian(x), F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=3))


def test_grey_matches_cv2_exactly_on_uint8():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.RandomState(1)
    img = rng.randint(0, 256, (1, 256, 256, 3)).astype(np.uint8)
    ours = rgb_to_grey(nchw(img))[0, 0].numpy()
    assert np.array_equal(ours, cv2.cvtColor(img[0], cv2.COLOR_RGB2GRAY).astype(np.float64))
    assert np.array_equal(rgb_to_grey(nchw(img).float())[0, 0].numpy(), ours)  # float input: same grey levels


def test_reference_variance_via_cv2_bgr2gray():
    cv2 = pytest.importorskip("cv2")
    img = reference_image()
    expected = cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert expected == pytest.approx(61254.0275, rel=RTOL)
    assert quality("var")(nchw(img[..., ::-1])).item() == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("kind", ["random", "faces", "faces_16px", "random_odd_size"])
def test_agrees_with_cv2(kind):
    images = {"random": lambda: random_images(4),
              "faces": face_images,
              "faces_16px": lambda: degraded(face_images()),
              "random_odd_size": lambda: random_images(3, seed=5, size=37)[:, :, :29]}[kind]()
    mean_abs, var = cv2_qualities(images)
    np.testing.assert_allclose(quality()(nchw(images)).numpy(), mean_abs, rtol=RTOL)
    np.testing.assert_allclose(quality("var")(nchw(images)).numpy(), var, rtol=RTOL)


@pytest.mark.parametrize("reduce", ["mean_abs", "var"])
def test_batch_equals_per_image_and_float_equals_uint8(reduce):
    x = nchw(np.concatenate([random_images(2), face_images()]))
    q = quality(reduce)
    batch = q(x)
    singles = torch.cat([q(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(batch, singles)
    for dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(q(x.to(dtype)), batch, rtol=RTOL, atol=0)


def test_low_resolution_images_have_lower_quality():
    faces = face_images()
    hr = quality()(nchw(faces))
    lr = quality()(nchw(degraded(faces)))
    assert torch.all(lr < hr)
    assert torch.all(lr < 0.5 * hr)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"\(N, 3, H, W\)"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), r"\(N, 3, H, W\)"),
    (torch.zeros(2, 4, 8, 8), r"\(N, 3, H, W\)"),
    (torch.zeros(2, 3, 1, 8), "at least 2x2"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.int32), "uint8 or float"),
    (np.zeros((2, 3, 8, 8), dtype=np.uint8), "torch.Tensor"),
])
def test_bad_input_raises_a_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        quality()(bad)


def straightforward_quality(images: torch.Tensor, reduce: str) -> torch.Tensor:
    """The plain float32 reflect pad + shifted slices implementation the fast path must reproduce."""
    x = images.to(torch.float32) if reduce == "mean_abs" else rgb_to_grey(images)
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    lap = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:] - 4 * p[..., 1:-1, 1:-1]
    q = lap.abs().mean(dim=(1, 2, 3)) if reduce == "mean_abs" else lap.flatten(1).var(dim=1, correction=0)
    return q.to(torch.float32)


@pytest.mark.parametrize("reduce", ["mean_abs", "var"])
@pytest.mark.parametrize("hw", [(2, 2), (3, 5), (5, 3), (7, 7), (2, 9), (112, 112)])
def test_fast_path_equals_straightforward_float_reference(reduce, hw):
    gen = torch.Generator().manual_seed(hw[0] * 1000 + hw[1])
    x = torch.randint(0, 256, (6, 3, *hw), dtype=torch.uint8, generator=gen)
    q = quality(reduce)
    expected = straightforward_quality(x, reduce)
    inputs = {"contiguous": x,
              "channels_last": x.contiguous(memory_format=torch.channels_last),
              "strided_view": torch.cat([x, x], dim=-1)[..., : hw[1]],
              "permuted_view": x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)}
    for name, images in inputs.items():
        torch.testing.assert_close(q(images), expected, rtol=RTOL, atol=1e-3, msg=f"{name} {hw}")
    assert not inputs["strided_view"].is_contiguous() and not inputs["permuted_view"].is_contiguous()
    # float input takes the float path; with integer values it must agree too (and equal float32 pad + slices exactly)
    torch.testing.assert_close(q(x.float().permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)), expected,
                               rtol=RTOL, atol=1e-3)
    assert torch.equal(laplacian(x, torch.int16).float(), laplacian(x.float()))


def test_float_path_equals_straightforward_reference_on_non_integer_pixels():
    x = torch.rand(3, 3, 7, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 255
    assert torch.equal(quality()(x), straightforward_quality(x, "mean_abs"))
    torch.testing.assert_close(quality("var")(x), straightforward_quality(x, "var"), rtol=RTOL, atol=0)


def test_exact_sum_overflow_paths():
    from lrfr_plugins.builtin.quality.laplacian import _exact_sum
    x = torch.full((2, 3, 40, 50), 1020, dtype=torch.int32)
    for bound in (1020, 2**25, 2**30):  # whole-sample int32, row int32 + int64, int64 only
        assert torch.equal(_exact_sum(x, bound).to(torch.int64), torch.full((2,), 1020 * 6000, dtype=torch.int64))
