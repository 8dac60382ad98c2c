"""TinyFace protocol: tiny fixtures in the release's layout (Testing_Set/Probe, Gallery_Match, Gallery_Distractor and
the two *_img_ID_pairs.mat files), exact rank-k and mAP on an embedder whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from lrfr_plugins import create
from lrfr_plugins.errors import DataError
from lrfr_plugins.metrics import average_precision
from lrfr_plugins.testing import check_plugin

scipy_io = pytest.importorskip("scipy.io")

# each image is one flat grey level (a code); the embedder maps the code to a unit vector at a chosen angle, so every
# cosine (and so every ranking) is known. Codes survive JPEG and any resize of a flat image.
ANGLE = {  # code -> angle in degrees
    10: 0, 20: 120, 30: 240,            # probes p1 (id 1), p2 (id 2), p3 (id 3)
    40: 10, 50: 100, 60: 125, 70: 60,   # gallery g1a (id 1), g1b (id 1), g2 (id 2), g3 (id 3)
    80: 5, 90: 230,                     # distractors d1, d2
}
PROBES = [("1_1.jpg", 1, 10, (18, 14)), ("2_1.jpg", 2, 20, (24, 20)), ("3_1.jpg", 3, 30, (12, 12))]
GALLERY = [("1_2.jpg", 1, 40, (20, 16)), ("1_3.jpg", 1, 50, (15, 22)), ("2_2.jpg", 2, 60, (30, 30)),
           ("3_2.jpg", 3, 70, (16, 20))]
DISTRACTORS = [("d_0001.jpg", 80, (21, 17)), ("sub/d_0002.png", 90, (9, 11))]


def _save(path, code, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    Image.fromarray(np.full((h, w, 3), code, np.uint8)).save(path)


def _cells(names):
    return np.array(names, dtype=object).reshape(-1, 1)


def make_tinyface(base, *, with_mat=True):
    """base/tinyface/Testing_Set in the release's layout; returns the Testing_Set folder."""
    ts = base / "tinyface" / "Testing_Set"
    for name, _, code, size in PROBES:
        _save(ts / "Probe" / name, code, size)
    for name, _, code, size in GALLERY:
        _save(ts / "Gallery_Match" / name, code, size)
    for name, code, size in DISTRACTORS:
        _save(ts / "Gallery_Distractor" / name, code, size)
    (ts / "Gallery_Distractor" / "readme.txt").write_text("not an image")
    if with_mat:
        scipy_io.savemat(str(ts / "probe_img_ID_pairs.mat"),
                         {"probe_set": _cells([n for n, *_ in PROBES]),
                          "probe_ids": np.array([[i] for _, i, *_ in PROBES], np.float64)})
        scipy_io.savemat(str(ts / "gallery_match_img_ID_pairs.mat"),
                         {"gallery_set": _cells([n for n, *_ in GALLERY]),
                          "gallery_ids": np.array([[i] for _, i, *_ in GALLERY], np.float64)})
    return ts


def make_embedder(angle=ANGLE, calls=None):
    def embed(images):
        assert isinstance(images, torch.Tensor) and images.dtype == torch.uint8
        assert tuple(images.shape[1:]) == (3, 112, 112)
        flat = images.flatten(1).float()
        assert torch.all(flat.max(1).values - flat.min(1).values <= 8), "fixture images are flat grey"
        codes = (flat.mean(1) / 10).round().long() * 10
        if calls is not None:
            calls.append(images.shape[0])
        rad = [math.radians(angle[int(c)]) for c in codes]
        return np.array([[3 * math.cos(r), 3 * math.sin(r), 0.0] for r in rad], np.float32)  # not unit: normalised
    return embed


# p1: d1 5, g1a 10 (mate, pos 2), g3 60, g1b 100 (mate, pos 4), g2 125, d2 130  -> rank 2
# p2: g2 5 (mate, pos 1)                                                       -> rank 1
# p3: d2 10, g2 115, d1 125, g1a 130, g1b 140, g3 180 (mate, pos 6)            -> rank 6
AP_TRAPEZOID = [(0.25 + (0.5 + 1 / 3) / 2) / 2, 1.0, 1 / 12]
AP_STEP = [0.5, 1.0, 1 / 6]


def test_tinyface_exact_ranks_and_map(tmp_path):
    make_tinyface(tmp_path)
    result = create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(), progress=False)
    m = result.results["identification"]
    assert m["rank1"] == pytest.approx(1 / 3)
    assert m["rank5"] == pytest.approx(2 / 3)
    assert m["rank10"] == pytest.approx(1.0) and m["rank20"] == pytest.approx(1.0)
    assert m["map"] == pytest.approx(np.mean(AP_TRAPEZOID)) == pytest.approx(17 / 36)
    assert (m["n_probes"], m["n_gallery"], m["n_distractors"]) == (3, 4, 2)
    assert result.rows[0]["rank1"] == pytest.approx(1 / 3) and result.rows[0]["map"] == pytest.approx(17 / 36)
    curve = result.curves["cmc:identification"]
    assert curve["rank"] == [1, 2, 3, 4, 5, 6]
    assert curve["rate"] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0], abs=1e-6)
    s = result.settings
    assert s["resize"].startswith("stretch") and s["resized_images"] == 9 and s["flip"] == "none"
    assert s["id_prefix_mismatches"] == 0 and s["distractors_found"] == 2 and s["complete"] is False
    assert "-100" in s["labels"] and "72.29" in s["compare_with"]


def test_tinyface_step_ap_streaming_and_flip(tmp_path):
    ts = make_tinyface(tmp_path)
    calls = []
    result = create("protocol", "tinyface", root=str(ts), ap_rule="step", block=1, chunk=1, batch_size=2,
                    flip="sum", resize="center-crop").evaluate(make_embedder(calls=calls), progress=False)
    m = result.results["identification"]
    assert m["map"] == pytest.approx(np.mean(AP_STEP)) == pytest.approx(5 / 9)
    assert m["rank1"] == pytest.approx(1 / 3) and m["rank5"] == pytest.approx(2 / 3)
    assert sum(calls) == 2 * 9 and max(calls) == 2  # every image and its mirror, two at a time
    assert result.settings["flip"].startswith("sum") and result.settings["resize"].startswith("center-crop")


def test_tinyface_ties_and_max_distractors(tmp_path):
    make_tinyface(tmp_path)
    tied = {**ANGLE, 80: 10}  # d1 scores exactly as g1a for p1
    pess = create("protocol", "tinyface", root=str(tmp_path)).evaluate(make_embedder(tied), progress=False)
    opt = create("protocol", "tinyface", root=str(tmp_path), ties="optimistic").evaluate(make_embedder(tied),
                                                                                       progress=False)
    assert pess.results["identification"]["rank1"] == pytest.approx(1 / 3)
    assert opt.results["identification"]["rank1"] == pytest.approx(2 / 3)
    one = create("protocol", "tinyface", root=str(tmp_path), max_distractors=1).evaluate(make_embedder(),
                                                                                        progress=False)
    assert one.results["identification"]["n_distractors"] == 1  # d_0001 only: p3 moves up to rank 5
    assert one.results["identification"]["rank5"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="not the complete release"):
        create("protocol", "tinyface", root=str(tmp_path), require_complete=True).evaluate(make_embedder(),
                                                                                           progress=False)


def test_tinyface_images_dir_aligned_copy(tmp_path):
    ts = make_tinyface(tmp_path)
    aligned = tmp_path / "aligned_pad_0.1_pad_high"
    for folder, items in (("Probe", PROBES), ("Gallery_Match", GALLERY)):
        for name, _, code, _ in items:
            _save(aligned / folder / name.replace(".jpg", ".png"), code, (112, 112))  # other extension: by stem
    for name, code, _ in DISTRACTORS:
        _save(aligned / "Gallery_Distractor" / name, code, (112, 112))
    result = create("protocol", "tinyface", root=str(ts), images_dir=str(aligned)).evaluate(make_embedder(),
                                                                                           progress=False)
    assert result.results["identification"]["map"] == pytest.approx(17 / 36)
    assert result.settings["resized_images"] == 0


def test_tinyface_missing_parts_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        create("protocol", "tinyface", root=str(tmp_path / "nowhere")).check()
    with pytest.raises(DataError, match="not a TinyFace test split"):
        create("protocol", "tinyface", root=str(tmp_path)).check()
    ts = make_tinyface(tmp_path / "a")
    create("protocol", "tinyface", root=str(ts)).check()
    for name in ("Gallery_Distractor", "Probe"):
        (ts / name).rename(ts / (name + ".off"))
    with pytest.raises(DataError, match="Gallery_Distractor/.*|Probe/") as info:
        create("protocol", "tinyface", root=str(tmp_path / "a")).check()
    assert "Gallery_Distractor" in str(info.value) and "Probe" in str(info.value)
    ts2 = make_tinyface(tmp_path / "b", with_mat=False)
    with pytest.raises(DataError, match="probe_img_ID_pairs.mat"):
        create("protocol", "tinyface", root=str(ts2)).check()
    (ts2 / "Gallery_Match" / "2_2.jpg").unlink()
    scipy_io.savemat(str(ts2 / "probe_img_ID_pairs.mat"), {"probe_set": _cells(["1_1.jpg"]), "probe_ids": [[1]]})
    scipy_io.savemat(str(ts2 / "gallery_match_img_ID_pairs.mat"),
                     {"gallery_set": _cells(["1_2.jpg", "2_2.jpg"]), "gallery_ids": [[1], [2]]})
    with pytest.raises(DataError, match="2_2.jpg"):
        create("protocol", "tinyface", root=str(ts2)).evaluate(make_embedder(), progress=False)
    scipy_io.savemat(str(ts2 / "probe_img_ID_pairs.mat"), {"probe_set": _cells(["3_1.jpg"]), "probe_ids": [[3]]})
    scipy_io.savemat(str(ts2 / "gallery_match_img_ID_pairs.mat"),
                     {"gallery_set": _cells(["1_2.jpg"]), "gallery_ids": [[1]]})
    with pytest.raises(DataError, match="closed-set"):
        create("protocol", "tinyface", root=str(ts2)).evaluate(make_embedder(), progress=False)


def test_average_precision_rules():
    assert average_precision([[1, 2, 3]]).tolist() == [1.0]
    assert average_precision([[2, 4], [1], [6]]) == pytest.approx(AP_TRAPEZOID)
    assert average_precision([[4, 2], [1], [6]], rule="step") == pytest.approx(AP_STEP)
    with pytest.raises(ValueError):
        average_precision([[0]])
    with pytest.raises(ValueError):
        average_precision([[2, 2]])
    with pytest.raises(ValueError):
        average_precision([[]])


def test_tinyface_conformance(tmp_path):
    make_tinyface(tmp_path)
    check_plugin("protocol", "tinyface", root=str(tmp_path))
