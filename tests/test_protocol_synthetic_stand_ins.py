"""The synthetic stand-ins for QMUL-SurvFace and SCface: real captures, the real protocols' contracts."""

import numpy as np
import pytest
import torch

from lrfr_plugins.ops.resize import resize_to
from lrfr_plugins.synthetic import SyntheticFaceGenerator
from lrfr_plugins.synthetic.capture import CaptureRange, capture


def faces(n=6):
    gen = SyntheticFaceGenerator(0, "test")
    return torch.from_numpy(np.ascontiguousarray(gen.render(np.arange(n), np.zeros(n, int)).transpose(0, 3, 1, 2)))


def test_capture_is_small_non_square_and_more_than_a_resize():
    images = faces()
    small = capture(images, CaptureRange(height=(14, 20)), np.random.default_rng(0))
    assert len(small) == 6
    for image, shot in zip(images, small):
        h, w = shot.shape[1:]
        assert shot.dtype == torch.uint8 and 14 <= h <= 20 and 0.7 * h <= w <= 0.95 * h
        plain = resize_to(image[None], (h, w), mode="area")[0]
        assert (shot.float() - plain.float()).abs().mean() > 1.0  # blur, noise and JPEG changed it
    again = capture(images, CaptureRange(height=(14, 20)), np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip(small, again))  # fixed by the seed


def identity_probe_embed(images):
    """A stand-in model: mean colours of the whole image and of the face centre."""
    x = images.float()
    return torch.cat([x.mean((2, 3)), x[:, :, 20:90, 20:90].mean((2, 3))], 1).numpy() - 100.0


def test_survface_stand_in_reports_what_qmul_reports(registry):
    proto = registry.create("protocol", "synthetic-survface", num_identities=20, images_per_identity=3, num_pairs=100)
    result = proto.evaluate(identity_probe_embed, progress=False)
    assert result.protocol == "synthetic-survface" and result.preset == "lozhkina"
    assert set(result.results) == {"verification"}
    assert set(result.results["verification"]) == {"accuracy", "std", "auc", "tar@far=0.3", "tar@far=0.1",
                                                   "tar@far=0.01", "tar@far=0.001"}
    assert "roc:verification" in result.curves and "positives first" in result.settings["pairs"]
    stratified = registry.create("protocol", "synthetic-survface", num_identities=20, images_per_identity=3,
                                 num_pairs=100, preset="stratified").evaluate(identity_probe_embed, progress=False)
    assert stratified.results["verification"]["auc"] == result.results["verification"]["auc"]  # same scores


def test_scface_stand_in_three_distances_farthest_first(registry):
    seen = []

    def embed(images):
        seen.append(images.shape[0])
        return identity_probe_embed(images)

    proto = registry.create("protocol", "synthetic-scface", num_identities=12, cameras=2)
    result = proto.evaluate(embed, progress=False)
    assert seen == [12 + 3 * 12 * 2]  # gallery and every probe embedded once, in one call
    assert list(result.results) == ["d1", "d2", "d3"]
    assert all(result.results[k]["n_probes"] == 24 for k in result.results)
    assert result.settings["distances"]["d1"].endswith("(farthest)")
    for key in ("d1", "d2", "d3"):
        rates = result.curves[f"cmc:{key}"]["rate"]
        assert rates == sorted(rates) and rates[11] == 1.0  # rank = gallery size: every probe found


def test_bad_parameters_are_refused(registry):
    from lrfr_plugins.errors import ParamsError

    with pytest.raises(ParamsError, match=r"face_heights must list 3 heights"):
        registry.create("protocol", "synthetic-scface", face_heights=[12, 20])
    with pytest.raises(ParamsError, match=r"face_height must be \[lo, hi\]"):
        registry.create("protocol", "synthetic-survface", face_height=[30, 20])
