"""QMUL-SurvFace verification protocol on a tiny fixture in the release's real layout (PROTOCOLS.md §4)."""

from __future__ import annotations

import collections
import math
import pathlib

import numpy as np
import pytest
import scipy.io as scipy_io
import torch
from PIL import Image

from lrfr_plugins.builtin.protocols.qmul_survface import (
    QMULSurvFace,
    QMULSurvFaceParams,
    interleaved_order,
    load_verification_set,
    read_pairs,
    stratified_10fold,
    to_square,
)
from lrfr_plugins.errors import DataError
from lrfr_plugins.metrics.verification import lozhkina_10fold
from lrfr_plugins.ops.resize import resize_to

N = 20  # positive pairs = negative pairs = identities
# Known cosine scores: positive pair j scores POS[j], negative pair j scores NEG[j] (all 40 distinct).
POS = [0.975 - 0.05 * j for j in range(N)]  # 0.975 ... 0.025
NEG = [0.5 - 0.05 * i for i in range(N)]  # 0.5 ... -0.45


def _color(k: int) -> tuple[int, int, int]:
    """Image k's uniform colour; R and G encode k (robust to JPEG's +-1), never black."""
    return 16 * (k // 16) + 8, 16 * (k % 16) + 8, 128


def _decode(pixel: torch.Tensor) -> int:
    r, g = int(pixel[0]), int(pixel[1])
    return (r // 16) * 16 + g // 16


def _write_mat(path: pathlib.Path, key: str, pairs: list[tuple[str, str]]) -> None:
    cells = np.empty((len(pairs), 2), dtype=object)
    for i, (a, b) in enumerate(pairs):
        cells[i, 0], cells[i, 1] = a, b
    scipy_io.savemat(str(path), {key: cells})


def make_fixture(base: pathlib.Path) -> dict:
    """QMUL-SurvFace/Face_Verification_Test_Set with 20 positive + 20 negative pairs over 60 unique images.

    Identity j (pid 100 + j) has an anchor <pid>_1_0.jpg (embedding (1, 0)), <pid>_2_0.jpg used in positive pair j
    (cosine POS[j] with the anchor) and <pid>_3_0.jpg used in negative pair j - 1 (cosine NEG[j - 1] with the other
    anchor). Anchors appear in both a positive and a negative pair, so 80 references name 60 images. Images are
    20x16 (wide) or 16x20 (tall) JPEGs, one is 112x112.
    """
    test_set = base / "QMUL-SurvFace" / "Face_Verification_Test_Set"
    images = test_set / "verification_images"
    images.mkdir(parents=True)
    names, vectors, shapes = [], {}, {}

    def add(name: str, vector: tuple[float, float], hw: tuple[int, int]) -> str:
        k = len(names)
        names.append(name)
        vectors[k] = np.asarray(vector, np.float64)
        shapes[name] = hw
        Image.fromarray(np.full((*hw, 3), _color(k), np.uint8)).save(images / name, quality=95)
        return name

    def unit(s: float) -> tuple[float, float]:
        return s, math.sqrt(1.0 - s * s)

    pos, neg = [], []
    anchors, negatives = [], []
    for j in range(N):
        pid = 100 + j
        hw = (16, 20) if j % 2 == 0 else (20, 16)
        anchors.append(add(f"{pid}_1_0.jpg", (1.0, 0.0), (112, 112) if j == 3 else hw))
        pos.append((anchors[-1], add(f"{pid}_2_0.jpg", unit(POS[j]), hw)))
    for j in range(N):
        other = (j + 1) % N
        negatives.append(add(f"{100 + other}_3_0.jpg", unit(NEG[j]), (20, 16)))
        neg.append((anchors[j], negatives[-1]))
    _write_mat(test_set / "positive_pairs_names.mat", "positive_pairs_names", pos)
    _write_mat(test_set / "negative_pairs_names.mat", "negative_pairs_names", neg)
    return {"root": base / "QMUL-SurvFace", "test_set": test_set, "names": names, "vectors": vectors,
            "shapes": shapes, "pos": pos, "neg": neg}


class RecordingEmbedder:
    """Maps each received image back to its fixture index through its colour; records every call."""

    def __init__(self, fixture: dict):
        self.vectors = fixture["vectors"]
        self.seen: list[int] = []
        self.images: dict[int, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 112, 112)
        out = []
        for img in images:
            k = _decode(img[:, 0, 0])
            self.seen.append(k)
            self.images[k] = img.clone()
            out.append(self.vectors[k])
        return np.asarray(out, np.float32)


@pytest.fixture()
def fixture(tmp_path):
    return make_fixture(tmp_path)


def run(fixture, **kw):
    embed = RecordingEmbedder(fixture)
    params = QMULSurvFaceParams(root=str(kw.pop("root", fixture["root"])), **kw)
    return QMULSurvFace(params).evaluate(embed, progress=False), embed


def _scores_labels():
    return np.asarray(POS + NEG), np.r_[np.ones(N, bool), np.zeros(N, bool)]


def reference_fold_accuracies(scores, labels, order=None):
    """§4.5 steps 3-6 written out plainly, independent of metrics.verification."""
    if order is not None:
        scores, labels = scores[order], labels[order]
    block = len(scores) // 10
    accs = []
    for k in range(10):
        test = list(range(k * block, (k + 1) * block))
        train = [i for i in range(10 * block) if i not in test]
        ts = [float(scores[i]) for i in train]
        tl = [bool(labels[i]) for i in train]
        lo, hi = min(ts), max(ts)
        best, best_j = None, -math.inf
        for step in range(1, 1001):
            thr = lo + step * (hi - lo) / 1000
            p = sum(1 for same in tl if same)
            n = len(ts) - p
            tpr = sum(1 for s, same in zip(ts, tl) if same and s > thr) / p
            fpr = sum(1 for s, same in zip(ts, tl) if not same and s > thr) / n
            if tpr - fpr > best_j:
                best, best_j = thr, tpr - fpr
        correct = sum(1 for i in test if (labels[i] and scores[i] > best) or (not labels[i] and scores[i] < best))
        accs.append(correct / block)
    return accs


# ---------------------------------------------------------------------------------------------------------------------
# Official metrics, folds, result shape
# ---------------------------------------------------------------------------------------------------------------------

def test_official_tar_and_auc_match_hand_computed_values(fixture):
    result, _ = run(fixture)
    m = result.results["verification"]
    assert set(m) == {"accuracy", "std", "auc", "tar@far=0.3", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001"}
    # 20 negatives: FAR 0.3 allows 6 false accepts (accept above the 7th negative, 0.20): positives 0.975..0.225 -> 16
    assert m["tar@far=0.3"] == pytest.approx(16 / 20)
    # FAR 0.1 allows 2 (above the 3rd negative, 0.40): positives down to 0.425 -> 12
    assert m["tar@far=0.1"] == pytest.approx(12 / 20)
    # FAR 0.01 / 0.001 allow none (above the top negative, 0.5): positives down to 0.525 -> 10
    assert m["tar@far=0.01"] == pytest.approx(10 / 20)
    assert m["tar@far=0.001"] == pytest.approx(10 / 20)
    # AUC = P(pos > neg): positives j <= 9 beat all 20 negatives, j >= 10 beat 29 - j -> (200 + 145) / 400
    assert m["auc"] == pytest.approx(345 / 400)
    assert "conservative" in result.settings["tar_rule"] and "all 40 pairs" in result.settings["official"]
    assert result.protocol == "qmul-survface" and result.preset == "lozhkina"
    assert len(result.rows) == 1 and result.rows[0]["folds"] == "lozhkina"
    assert result.rows[0]["tar@far=0.1"] == m["tar@far=0.1"] and result.rows[0]["auc"] == m["auc"]
    roc = result.curves["roc:verification"]
    assert len(roc["fpr"]) == len(roc["tpr"]) and roc["fpr"][0] == 0 and roc["tpr"][-1] == 1


def test_interpolated_rule_is_named(fixture):
    result, _ = run(fixture, tar_rule="interpolated")
    assert "interpolated" in result.settings["tar_rule"]
    assert result.results["verification"]["tar@far=0.3"] == pytest.approx(16 / 20)


def test_lozhkina_preset_is_class_pure_and_matches_reference(fixture):
    result, _ = run(fixture)
    scores, labels = _scores_labels()
    expected = reference_fold_accuracies(scores, labels)
    got = result.settings["fold_accuracies"]
    assert got == pytest.approx([round(a, 4) for a in expected])
    m = result.results["verification"]
    assert m["accuracy"] == pytest.approx(np.mean(expected))
    assert m["std"] == pytest.approx(np.std(expected, ddof=1) / np.sqrt(10))  # SEM, as the study
    assert "class-pure" in result.settings["folds"] and result.settings["study_conventions"] is True
    # folds 1-5 hold positives only, 6-10 negatives only (4 pairs each)
    direct = lozhkina_10fold(scores, labels)
    assert direct.fold_accuracies == pytest.approx(tuple(expected))
    # each fold accuracy is a multiple of 1/4 (4 pairs); class-pure folds of this fixture are far from 0.5 each
    assert all(abs(a * 4 - round(a * 4)) < 1e-9 for a in expected)


def test_stratified_preset_interleaves_and_matches_reference(fixture):
    scores, labels = _scores_labels()
    order = interleaved_order(labels)
    assert order[:6].tolist() == [0, 20, 1, 21, 2, 22]
    assert sorted(order.tolist()) == list(range(40))
    assert all(labels[order][k * 4:(k + 1) * 4].sum() == 2 for k in range(10))
    expected = reference_fold_accuracies(scores, labels, order)
    result, _ = run(fixture, preset="stratified")
    m = result.results["verification"]
    assert result.preset == "stratified" and result.rows[0]["folds"] == "stratified"
    assert "interleaved" in result.settings["folds"] and result.settings["study_conventions"] is False
    assert result.settings["fold_accuracies"] == pytest.approx([round(a, 4) for a in expected])
    assert m["accuracy"] == pytest.approx(np.mean(expected))
    assert m["std"] == pytest.approx(np.std(expected, ddof=1) / np.sqrt(10))
    assert stratified_10fold(scores, labels).accuracy == pytest.approx(np.mean(expected))
    # the official metrics do not depend on the fold preset
    base, _ = run(fixture)
    for key in ("auc", "tar@far=0.3", "tar@far=0.1", "tar@far=0.01", "tar@far=0.001"):
        assert m[key] == base.results["verification"][key]


def test_separable_scores_give_hand_computed_fold_accuracies():
    # Positives 1.0..0.62 (step 0.02), negatives -1.0..-0.62, so every train pool is separable and its Youden
    # optimum is the first grid step at or above the highest *train* negative.
    pos = 1.0 - 0.02 * np.arange(20)
    scores = np.r_[pos, -pos]
    labels = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    # lozhkina: folds 1-9 are perfect (threshold ~ -0.62, the top negative, is in their train pool). Fold 10 holds
    # the top four negatives (-0.68..-0.62): its threshold, ~ -0.70, accepts all of them -> TNR 0.
    # mean 0.9; SEM = sqrt((9 * 0.01 + 0.81) / 9) / sqrt(10) = 0.1
    fold = lozhkina_10fold(scores, labels)
    assert fold.fold_accuracies == pytest.approx((1.0,) * 9 + (0.0,))
    assert fold.accuracy == pytest.approx(0.9) and fold.std == pytest.approx(0.1)
    # stratified: fold k holds p_2k, p_2k+1, n_2k, n_2k+1; fold 10 holds the two top negatives (-0.64, -0.62),
    # accepted at its threshold ~ -0.66, and two positives (right) -> 0.5; the rest are perfect.
    # mean 0.95; SEM = sqrt((9 * 0.0025 + 0.2025) / 9) / sqrt(10) = 0.05
    fold = stratified_10fold(scores, labels)
    assert fold.fold_accuracies == pytest.approx((1.0,) * 9 + (0.5,))
    assert fold.accuracy == pytest.approx(0.95) and fold.std == pytest.approx(0.05)
    # Interleaving also handles unequal counts: 2 positives per 3 pairs.
    uneven = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    order = interleaved_order(uneven)
    assert all(uneven[order][k * 3:(k + 1) * 3].sum() == 2 for k in range(10))


def test_each_unique_image_is_embedded_once_and_chunking_does_not_matter(fixture):
    result, embed = run(fixture)
    counts = collections.Counter(embed.seen)
    assert len(fixture["names"]) == 60 and len(embed.seen) == 60 and set(counts.values()) == {1}
    assert result.settings["images"] == 60
    small, embed_small = run(fixture, batch_size=7)
    assert len(embed_small.seen) == 60 and set(collections.Counter(embed_small.seen).values()) == {1}
    assert small.results == result.results


def test_both_roots_and_both_squeeze_modes_load_the_same_pairs(fixture):
    a = load_verification_set(fixture["root"])
    b = load_verification_set(fixture["test_set"], squeeze_me=False)
    assert a.names == b.names and np.array_equal(a.pairs, b.pairs) and np.array_equal(a.issame, b.issame)
    assert (a.n_positive, a.n_negative) == (20, 20) and a.issame[:20].all() and not a.issame[20:].any()
    mat = fixture["test_set"] / "positive_pairs_names.mat"
    assert read_pairs(mat, "positive_pairs_names", squeeze_me=True) == fixture["pos"]
    assert read_pairs(mat, "positive_pairs_names", squeeze_me=False) == fixture["pos"]
    raw = scipy_io.loadmat(str(mat))["positive_pairs_names"]  # the release's form: 1-element string arrays
    assert raw.dtype == object and raw.shape == (20, 2) and raw[0, 0].shape == (1,)
    # one pair: squeeze_me squeezes (1, 2) to (2,)
    _write_mat(mat, "positive_pairs_names", fixture["pos"][:1])
    assert read_pairs(mat, "positive_pairs_names") == fixture["pos"][:1]


# ---------------------------------------------------------------------------------------------------------------------
# Square handling (§4.6)
# ---------------------------------------------------------------------------------------------------------------------

def test_pad_is_the_studys_top_left_black_pad(fixture):
    _, embed = run(fixture)
    names = fixture["names"]
    for k, img in embed.images.items():
        h, w = fixture["shapes"][names[k]]
        color = torch.tensor(_color(k), dtype=torch.int16).view(3, 1, 1)
        if (h, w) == (112, 112):
            assert (img.short() - color).abs().max() <= 3
            continue
        nh, nw = (89, 112) if w > h else (112, 89)  # int(16 / 20 * 112) = int(89.6) = 89
        assert (img[:, :nh, :nw].short() - color).abs().max() <= 3  # content top-left
        assert img[:, nh:, :].eq(0).all() and img[:, :, nw:].eq(0).all()  # black below / right


def test_stretch_fills_the_whole_square(fixture):
    _, embed = run(fixture, square="stretch")
    for k, img in embed.images.items():
        color = torch.tensor(_color(k), dtype=torch.int16).view(3, 1, 1)
        assert (img.short() - color).abs().max() <= 3
    result, _ = run(fixture, square="stretch")
    assert result.settings["square"].startswith("stretch")


def test_to_square_pixels_on_a_gradient():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (2, 3, 20, 16), dtype=np.uint8))  # tall: h 20 > w 16
    pad = to_square(img, "pad")
    assert pad.shape == (2, 3, 112, 112)
    assert torch.equal(pad[:, :, :, :89], resize_to(img, (112, 89), mode="bilinear", antialias=False))
    assert pad[:, :, :, 89:].eq(0).all()
    stretch = to_square(img, "stretch")
    assert torch.equal(stretch, resize_to(img, (112, 112), mode="bilinear", antialias=False))
    square = torch.from_numpy(rng.integers(0, 256, (1, 3, 30, 30), dtype=np.uint8))
    assert torch.equal(to_square(square, "pad"), to_square(square, "stretch"))  # square: simply resized
    same = torch.zeros((1, 3, 112, 112), dtype=torch.uint8)
    assert to_square(same, "pad") is same


def test_pad_within_one_grey_level_of_the_studys_cv2_square_crop():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for h, w in ((20, 16), (16, 23), (25, 25)):
        hwc = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        # the study's square_crop (data/test_dataset.py)
        if h > w:
            ch, cw = 112, int(float(w) / h * 112)
        else:
            cw, ch = 112, int(float(h) / w * 112)
        ref = np.zeros((112, 112, 3), np.uint8)
        ref[:ch, :cw] = cv2.resize(hwc, (cw, ch))
        ours = to_square(torch.from_numpy(hwc).permute(2, 0, 1)[None].contiguous(), "pad")[0].permute(1, 2, 0)
        assert np.abs(ours.numpy().astype(int) - ref.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------

def test_missing_root_and_wrong_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found"):
        run({"root": tmp_path / "nope", "vectors": {}})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a QMUL-SurvFace folder.*Face_Verification_Test_Set"):
        run({"root": tmp_path / "empty", "vectors": {}})


def test_missing_mat_and_images_folder(fixture):
    (fixture["test_set"] / "negative_pairs_names.mat").unlink()
    with pytest.raises(DataError, match="negative_pairs_names.mat: file not found.*QMUL-SurvFace-v1.zip"):
        run(fixture)


def test_missing_images_folder(fixture):
    images = fixture["test_set"] / "verification_images"
    for f in images.iterdir():
        f.unlink()
    images.rmdir()
    with pytest.raises(DataError, match="verification_images: folder not found"):
        run(fixture)


def test_unreadable_mat_and_missing_key(fixture):
    mat = fixture["test_set"] / "positive_pairs_names.mat"
    mat.write_bytes(b"this is not a MATLAB file" * 10)
    with pytest.raises(DataError, match=r"positive_pairs_names\.mat: not a readable MATLAB \.mat file"):
        run(fixture)
    _write_mat(mat, "something_else", fixture["pos"])
    with pytest.raises(DataError, match=r"positive_pairs_names\.mat: no variable 'positive_pairs_names' "
                                        r"\(found: something_else\)"):
        run(fixture)
    scipy_io.savemat(str(mat), {"positive_pairs_names": np.zeros((3, 3))})
    with pytest.raises(DataError, match=r"shape \(3, 3\), expected a cell array of shape \(N, 2\)"):
        run(fixture)


def test_pair_naming_a_missing_image(fixture):
    (fixture["test_set"] / "verification_images" / fixture["neg"][4][1]).unlink()
    with pytest.raises(DataError, match=r"negative_pairs_names\.mat negative_pairs_names row 5 \(1-based\) names "
                                        r"'105_3_0\.jpg', which is not in .*verification_images"):
        run(fixture)


def test_pair_id_prefixes_are_asserted(fixture):
    pos = list(fixture["pos"])
    pos[6] = (pos[6][0], fixture["pos"][7][1])  # ids 106 and 107 in a positive pair
    _write_mat(fixture["test_set"] / "positive_pairs_names.mat", "positive_pairs_names", pos)
    with pytest.raises(DataError, match=r"positive_pairs_names\.mat positive_pairs_names row 7 \(1-based\): "
                                        r"positive pair .*'106' and '107'"):
        run(fixture)
    _write_mat(fixture["test_set"] / "positive_pairs_names.mat", "positive_pairs_names", fixture["pos"])
    neg = list(fixture["neg"])
    neg[2] = fixture["pos"][2]  # same id in a negative pair
    _write_mat(fixture["test_set"] / "negative_pairs_names.mat", "negative_pairs_names", neg)
    with pytest.raises(DataError, match=r"negative_pairs_names\.mat negative_pairs_names row 3 \(1-based\): "
                                        r"negative pair .*must not share"):
        run(fixture)


# ---------------------------------------------------------------------------------------------------------------------
# Open-set identification (Face_Identification_Test_Set)
# ---------------------------------------------------------------------------------------------------------------------

D = 8
# mated probes: (id, vector); subjects 1..3 own axes 0..2; axis 7 is orthogonal to every template
_ID_MATES = [(1, {0: 0.9}), (2, {1: 0.6}), (2, {1: 0.5, 2: 0.7}), (3, {2: 0.3})]
_ID_UNMATED = [0.8, 0.5, 0.4, 0.2, 0.1]  # top-1 score of each unmated probe (on subject 1's axis)


def _vec(parts: dict[int, float], rest: int) -> np.ndarray:
    v = np.zeros(D)
    for axis, x in parts.items():
        v[axis] = x
    v[rest] = math.sqrt(max(0.0, 1.0 - float(np.sum(v * v))))
    return v


def make_id_fixture(base: pathlib.Path, *, mats_in_evaluation: bool = False) -> dict:
    """QMUL-SurvFace/Face_Identification_Test_Set: 3 ids x 2 gallery images, 4 mated probes, 5 unmated probes
    (one a distractor_<n>.jpg), tiny non-square JPEGs; the mate and unmated top-1 cosines are the values above."""
    root = base / "QMUL-SurvFace"
    test_set = root / ID_SET_NAME
    vectors: dict[int, np.ndarray] = {}

    def add(sub: str, name: str, vector: np.ndarray) -> str:
        k = len(vectors)
        vectors[k] = vector
        (test_set / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full(((20, 14) if k % 2 else (14, 18)) + (3,), _color(k), np.uint8)).save(test_set / sub / name,
                                                                                              quality=95)
        return name

    gallery, gallery_ids = [], []
    for s in (1, 2, 3):
        for i in range(2):
            gallery.append(add("gallery", f"{300 + s}_cam{i}_1.jpg", _vec({s - 1: 1.0}, 7)))
            gallery_ids.append(s)
    mated, mated_ids = [], []
    for i, (s, parts) in enumerate(_ID_MATES):
        mated.append(add("mated_probe", f"{300 + s}_cam5_{i}.jpg", _vec(parts, 7)))
        mated_ids.append(s)
    for i, u in enumerate(_ID_UNMATED):
        add("unmated_probe", f"distractor_{i}.jpg" if i == 4 else f"{400 + i}_cam1_1.jpg", _vec({0: u}, 6))
    mat_dir = root / "Face_Identification_Evaluation" if mats_in_evaluation else test_set
    mat_dir.mkdir(parents=True, exist_ok=True)

    def cells(names):
        arr = np.empty((len(names), 1), dtype=object)
        for j, n in enumerate(names):
            arr[j, 0] = n
        return arr

    scipy_io.savemat(str(mat_dir / "gallery_img_ID_pairs.mat"),
                     {"gallery_set": cells(gallery), "gallery_ids": np.asarray(gallery_ids, np.uint16)[:, None]})
    scipy_io.savemat(str(mat_dir / "mated_probe_img_ID_pairs.mat"),
                     {"mated_probe_set": cells(mated), "mated_probe_ids": np.asarray(mated_ids, np.uint16)[:, None]})
    return {"root": root, "test_set": test_set, "vectors": vectors}


ID_SET_NAME = "Face_Identification_Test_Set"


def run_id(fix, **kw):
    embed = RecordingEmbedder(fix)
    params = QMULSurvFaceParams(root=str(kw.pop("root", fix["root"])), **{"task": "identification", **kw})
    return QMULSurvFace(params).evaluate(embed, progress=False), embed


def test_identification_exact_rule_hand_computed(tmp_path):
    fix = make_id_fixture(tmp_path)
    res, embed = run_id(fix, id_rule="exact")
    r = res.results["identification"]
    # mates 0.9, 0.6 (best of id 2's probes is not needed: each probe counts), 0.5 (rank 2 <= 20), 0.3
    # exact curve: FPIR 0 -> 1/4, .2 -> 1/4, .4 -> 3/4, .6 -> 3/4, .8 -> 1, 1 -> 1
    assert r["tpir@fpir=0.3"] == pytest.approx(0.25)
    assert r["tpir@fpir=0.2"] == pytest.approx(0.25)
    assert r["tpir@fpir=0.1"] == pytest.approx(0.25)
    assert r["auc_tpir_fpir"] == pytest.approx(0.2 * (0.25 + 0.5 + 0.75 + 0.875 + 1.0), abs=1e-6)
    assert (r["n_mated"], r["n_unmated"], r["n_gallery"], r["n_gallery_ids"], r["rank"]) == (4, 5, 6, 3, 20)
    assert sorted(embed.seen) == list(range(6 + 4 + 5))  # every image embedded once
    assert list(res.results) == ["identification"] and res.rows[0]["set"] == "identification"
    curve = res.curves["tpir_fpir:identification"]
    assert curve["fpir"][0] == 0.0 and curve["fpir"][-1] == 1.0


def test_identification_rank_cut(tmp_path):
    fix = make_id_fixture(tmp_path)
    r = run_id(fix, id_rule="exact", id_rank=1)[0].results["identification"]
    # the third mate's id ranks 2nd (0.7 for id 3 beats 0.5): never identified at rank 1 -> curve of the metric tests
    assert r["tpir@fpir=0.3"] == pytest.approx(0.25)
    assert r["auc_tpir_fpir"] == pytest.approx(0.5, abs=1e-6)


def test_identification_challenge_rule_matches_the_metric(tmp_path):
    from lrfr_plugins.metrics import open_set_curve, tpir_at_fpir

    fix = make_id_fixture(tmp_path)
    r = run_id(fix)[0].results["identification"]
    fpir, tpir, _ = open_set_curve([0.9, 0.6, 0.5, 0.3], _ID_UNMATED, thresholds="grid")
    for f in (0.3, 0.2, 0.1):
        assert r[f"tpir@fpir={f:g}"] == pytest.approx(tpir_at_fpir(fpir, tpir, f, rule="nearest"), abs=1e-6)
    # grid from 0.1 to 0.8 reaches FPIR 0.2 and 0.4 around 0.3; in floats |0.2 - 0.3| < |0.4 - 0.3|, so (as the
    # challenge's argmin) FPIR 0.2 is read: t in (0.5, 0.8], the lowest such grid t admits the mates 0.9, 0.6
    assert r["tpir@fpir=0.3"] == pytest.approx(0.5)
    assert r["realised_fpir@0.3"] == pytest.approx(0.2)
    assert r["tpir@fpir=0.2"] == pytest.approx(0.5)
    # FPIR nearest 0.1 is the lowest of the grid: 0.2 (t in (0.5, 0.8]); lowest such t admits 0.9, 0.6
    assert r["tpir@fpir=0.1"] == pytest.approx(0.5)


def test_identification_max_gallery_and_mats_in_evaluation_folder(tmp_path):
    fix = make_id_fixture(tmp_path, mats_in_evaluation=True)
    a = run_id(fix, id_rule="exact", id_gallery="max")[0].results["identification"]
    b = run_id(fix, root=fix["test_set"], id_rule="exact")[0].results["identification"]
    assert a["tpir@fpir=0.3"] == b["tpir@fpir=0.3"] == pytest.approx(0.25)


def test_both_tasks_in_one_result(tmp_path):
    ver = make_fixture(tmp_path)
    make_id_fixture(tmp_path / "id")
    # put the identification set next to the verification set
    (tmp_path / "id" / "QMUL-SurvFace" / ID_SET_NAME).rename(ver["root"] / ID_SET_NAME)
    fix = {"root": ver["root"], "vectors": {**ver["vectors"]}}
    params = QMULSurvFaceParams(root=str(ver["root"]), task="both")
    protocol = QMULSurvFace(params)
    protocol.check()

    class Both:
        def __call__(self, images):
            return np.asarray([np.r_[np.zeros(D - 2), 1.0, 0.5] for _ in images], np.float32)

    res = protocol.evaluate(Both(), progress=False)
    assert set(res.results) == {"verification", "identification"}
    assert [row["set"] for row in res.rows] == ["verification", "identification"]
    assert "roc:verification" in res.curves and "tpir_fpir:identification" in res.curves
    assert fix["root"] == ver["root"]


def test_identification_missing_parts_named(tmp_path):
    fix = make_id_fixture(tmp_path)
    for f in (fix["test_set"] / "unmated_probe").iterdir():
        f.unlink()
    (fix["test_set"] / "unmated_probe").rmdir()
    (fix["test_set"] / "mated_probe_img_ID_pairs.mat").unlink()
    protocol = QMULSurvFace(QMULSurvFaceParams(root=str(fix["root"]), task="identification"))
    with pytest.raises(DataError, match=r"unmated_probe/.*mated_probe_img_ID_pairs\.mat"):
        protocol.check()
    with pytest.raises(DataError, match="unmated_probe/"):
        run_id(fix)
    # the verification task does not look at the identification set, and vice versa
    with pytest.raises(DataError, match="Face_Verification_Test_Set"):
        QMULSurvFace(QMULSurvFaceParams(root=str(fix["root"]))).check()


def test_identification_listed_image_missing_and_bad_ids(tmp_path):
    fix = make_id_fixture(tmp_path)
    (fix["test_set"] / "gallery" / "301_cam0_1.jpg").unlink()
    with pytest.raises(DataError, match=r"gallery_img_ID_pairs\.mat names 1 image\(s\) not in .*gallery"):
        run_id(fix)
    fix = make_id_fixture(tmp_path / "b")
    scipy_io.savemat(str(fix["test_set"] / "mated_probe_img_ID_pairs.mat"),
                     {"mated_probe_set": np.asarray(["301_cam5_0.jpg"], dtype=object)[:, None],
                      "mated_probe_ids": np.asarray([[9]], np.uint16)})
    with pytest.raises(DataError, match="no gallery image"):
        run_id(fix)
