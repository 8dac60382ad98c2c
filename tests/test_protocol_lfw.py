"""The ``lfw`` protocol and the shared pair core on a tiny LFW-layout folder written in tmp_path."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import pytest
import torch

from lrfr_plugins.builtin.protocols.lfw import LFW, LFWParams, parse_pairs
from lrfr_plugins.builtin.protocols.pairs import evaluate_pairs
from lrfr_plugins.errors import DataError
from lrfr_plugins.formats.images import encode_image
from lrfr_plugins.metrics.verification import lozhkina_10fold
from lrfr_plugins.testing import check_protocol

PEOPLE = ["Anna_A", "Ben_B", "Cara_C", "Dan_D", "Eve_E"]
PER_PERSON = 4
ODD = ("Anna_A", 4)  # an image the fixture embedder maps to an unrelated direction


def face(person: int, number: int) -> np.ndarray:
    """112x112 RGB: R = identity colour, G = fine vertical stripes (flattened by down-sampling), B = image number."""
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 40 * person + 20
    img[..., 1] = np.where((np.arange(112) // 2) % 2 == 0, 30, 220)[None, :]
    img[..., 2] = 10 * (person * PER_PERSON + number)
    return img


def write_lfw(tmp_path, folds=10, per_kind=3, size=112, jpeg_person="Eve_E", odd_pair=True):
    """root/<Name>/<Name>_<NNNN>.png (one person as .jpg) and pairs.txt next to root; returns (root, pairs lines)."""
    root = tmp_path / "lfw_crop"
    for k, name in enumerate(PEOPLE):
        (root / name).mkdir(parents=True)
        for n in range(1, PER_PERSON + 1):
            img = face(k, n)
            if size != 112:
                img = img[:size, :size]
            ext = ".jpg" if name == jpeg_person else ".png"
            (root / name / f"{name}_{n:04d}{ext}").write_bytes(encode_image(img, fmt=ext))
    rng = np.random.default_rng(0)
    lines = [f"{folds}\t{per_kind}"]
    for f in range(folds):
        for j in range(per_kind):
            if odd_pair and f == 0 and j == 0:
                lines.append("Anna_A\t1\t4")
                continue
            name = PEOPLE[rng.integers(len(PEOPLE))]
            i, k = rng.choice(np.arange(1, PER_PERSON), 2, replace=False)  # never image 4: ODD stays in one pair
            lines.append(f"{name}\t{i}\t{k}")
        for _ in range(per_kind):
            a, b = rng.choice(len(PEOPLE), 2, replace=False)
            lines.append(f"{PEOPLE[a]}\t{rng.integers(1, PER_PERSON)}\t{PEOPLE[b]}\t{rng.integers(1, PER_PERSON)}")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root, lines


class IdentityEmbedder:
    """One-hot of the identity colour (R channel); ODD maps to a spare axis. Records every batch it sees."""

    def __init__(self, odd=True):
        self.calls: list[torch.Tensor] = []
        self.odd = odd

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 112, 112)
        self.calls.append(images.clone())
        person = np.rint((images[:, 0].float().mean((1, 2)).numpy() - 20) / 40).astype(int)
        number = np.rint(images[:, 2].float().mean((1, 2)).numpy() / 10).astype(int) - person * PER_PERSON
        out = np.zeros((len(images), 8), np.float32)
        out[np.arange(len(images)), person] = 1.0
        if self.odd:
            odd = (person == PEOPLE.index(ODD[0])) & (number == ODD[1])
            out[odd] = 0.0
            out[odd, 7] = 1.0
        return out


def test_parse_pairs_keeps_order_and_dedupes(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2 1\nAnna_A\t1\t2\nAnna_A 1 Ben_B 3\n\nBen_B\t3\t1\nCara_C\t2\tAnna_A\t2\n")
    plist = parse_pairs(path)
    assert plist.keys == [("Anna_A", 1), ("Anna_A", 2), ("Ben_B", 3), ("Ben_B", 1), ("Cara_C", 2)]
    assert plist.pairs.tolist() == [[0, 1], [0, 2], [2, 3], [4, 1]]
    assert plist.issame.tolist() == [True, False, True, False]
    assert plist.folds == 2 and plist.pair_lines == [2, 3, 5, 6]


def test_perfect_embedder_gives_accuracy_one(tmp_path):
    root, _ = write_lfw(tmp_path, odd_pair=False)
    result = LFW(LFWParams(root=str(root), sizes=[112, 14])).evaluate(IdentityEmbedder(odd=False), progress=False)
    assert result.protocol == "lfw" and result.preset == "lozhkina"
    assert set(result.results) == {"112", "14"}
    for key in ("112", "14"):
        # same pairs score 1, different 0: the Youden threshold is the first grid step, 0 + 1/1000.
        assert result.results[key] == {"accuracy": 1.0, "std": 0.0, "threshold": pytest.approx(0.001)}
    assert [r["resolution"] for r in result.rows] == ["112px", "14px"]
    assert result.rows[0]["auc"] == 1.0 and result.rows[0]["pairs"] == 60
    assert set(result.curves) == {"roc:112", "roc:14"}
    s = result.settings
    assert (s["procedure"], s["std_kind"], s["which"], s["down"], s["up"], s["antialias"], s["flip"], s["folds"]) == \
        ("lozhkina", "sem", "both", "bilinear", "bilinear", False, False, 10)
    assert "cosine" in s["threshold_units"]


def test_one_wrong_same_pair_hand_computed(tmp_path):
    """Fold 0's first same pair scores 0: fold 0 gets 5/6, the rest 1 -> mean 59/60, SEM exactly 1/60."""
    root, _ = write_lfw(tmp_path)
    result = LFW(LFWParams(root=str(root), sizes=[112])).evaluate(IdentityEmbedder(), progress=False)
    r = result.results["112"]
    assert r["accuracy"] == pytest.approx(59 / 60)
    fold = np.array([5 / 6] + [1.0] * 9)
    assert r["std"] == pytest.approx(np.std(fold, ddof=1) / math.sqrt(10))
    assert r["std"] == pytest.approx(1 / 60)
    assert r["threshold"] == pytest.approx(0.001)


def test_unique_images_embedded_once_per_size_and_degraded(tmp_path):
    root, lines = write_lfw(tmp_path)
    unique = LFW(LFWParams(root=str(root))).load()[0].shape[0]
    referenced = {(f[0], f[1]) for f in (ln.split() for ln in lines[1:]) if len(f) == 3} \
        | {(f[0], f[2]) for f in (ln.split() for ln in lines[1:]) if len(f) == 3} \
        | {(f[0], f[1]) for f in (ln.split() for ln in lines[1:]) if len(f) == 4} \
        | {(f[2], f[3]) for f in (ln.split() for ln in lines[1:]) if len(f) == 4}
    assert unique == len(referenced) < 60 * 2
    emb = IdentityEmbedder()
    LFW(LFWParams(root=str(root), sizes=[112, 28, 7])).evaluate(emb, progress=False)
    assert [len(c) for c in emb.calls] == [unique] * 3
    for batch in emb.calls:
        assert len({hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in batch}) == unique
    stripes = [float(c[:, 1].float().std(dim=2).mean()) for c in emb.calls]
    assert stripes[0] > 80  # 112 px: the 2-px stripes are intact
    assert stripes[2] < 1  # 7 px: bilinear without AA averages them away: the embedder saw degraded faces


def test_which_second_embeds_full_resolution_once(tmp_path):
    root, _ = write_lfw(tmp_path)
    protocol = LFW(LFWParams(root=str(root), sizes=[28, 14, 7], which="second"))
    _, plist, _ = protocol.load()
    emb = IdentityEmbedder()
    result = protocol.evaluate(emb, progress=False)
    n_first, n_second = len(np.unique(plist.pairs[:, 0])), len(np.unique(plist.pairs[:, 1]))
    # HR of the first images once (at the first size), then LR of the second images at each size.
    assert [len(c) for c in emb.calls] == [n_first, n_second, n_second, n_second]
    assert [float(c[:, 1].float().std(dim=2).mean()) > 80 for c in emb.calls] == [True, False, False, False]
    assert result.settings["which"] == "second" and result.rows[0]["degraded"] == "second"
    assert result.preset == "lozhkina"


def test_knoche_preset_reports_cross_rows(tmp_path):
    root, _ = write_lfw(tmp_path, odd_pair=False)
    result = LFW(LFWParams(root=str(root), preset="knoche", sizes=[112, 14])).evaluate(IdentityEmbedder(odd=False),
                                                                                       progress=False)
    assert list(result.results) == ["112", "14", "14-cross"]
    assert [r["resolution"] for r in result.rows] == ["112px", "14px", "14px-cross"]
    assert result.results["14-cross"]["accuracy"] == 1.0
    s = result.settings
    assert result.preset == "knoche"
    assert (s["down"], s["up"], s["antialias"], s["cross_rows"], s["procedure"]) == \
        ("bicubic-pil", "bicubic-pil", True, True, "lozhkina")
    assert "roc:14-cross" in result.curves


def test_overrides_beat_the_preset(tmp_path):
    p = LFWParams(root="x", preset="knoche", down="area", antialias=False, cross_rows=False)
    assert (p.down, p.up, p.antialias, p.cross_rows, p.rounding) == ("area", "bicubic-pil", False, False, "truncate")
    with pytest.raises(ValueError, match="cross_rows"):
        LFWParams(root="x", preset="knoche", which="first")
    with pytest.raises(ValueError, match="sizes"):
        LFWParams(root="x", sizes=[224])


def test_core_matches_the_metric_on_its_own_scores():
    """The core's lozhkina numbers are lozhkina_10fold's on the cosine of the embeddings the embedder returns."""
    rng = np.random.default_rng(1)
    n = 40
    images = torch.zeros((n, 3, 112, 112), dtype=torch.uint8)
    images[:, 0] = torch.arange(n, dtype=torch.uint8)[:, None, None]
    table = rng.standard_normal((n, 6))
    pairs = rng.integers(0, n, (50, 2))
    issame = np.tile([True, False], 25)

    def embed(x):
        return table[x[:, 0, 0, 0].long().numpy()]

    result = evaluate_pairs(images, pairs, issame, embed, sizes=[112], progress=False)
    a, b = table[pairs[:, 0]], table[pairs[:, 1]]
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    ref = lozhkina_10fold(cos, issame)
    assert result.results["112"]["accuracy"] == pytest.approx(ref.accuracy, abs=1e-12)
    assert result.results["112"]["std"] == pytest.approx(ref.std, abs=1e-12)
    assert result.results["112"]["threshold"] == pytest.approx(np.mean(ref.thresholds), abs=1e-12)


def test_conformance(tmp_path):
    root, _ = write_lfw(tmp_path)
    check_protocol(LFW(LFWParams(root=str(root), sizes=[112, 7])))


def test_other_sizes_are_resized_with_one_warning(tmp_path, caplog):
    root, _ = write_lfw(tmp_path, size=100, odd_pair=False)
    with caplog.at_level(logging.WARNING, logger="lrfr"):
        images = LFW(LFWParams(root=str(root))).load()[0]
    assert images.shape[1:] == (3, 112, 112)
    assert sum("not an aligned 112x112" in r.getMessage() for r in caplog.records) == 1


def test_explicit_pairs_path_and_header_with_spaces(tmp_path):
    root, lines = write_lfw(tmp_path, folds=2, per_kind=3, odd_pair=False)
    other = tmp_path / "elsewhere.txt"
    other.write_text("2 3\n" + "\n".join(lines[1:]) + "\n")
    (tmp_path / "pairs.txt").unlink()
    result = LFW(LFWParams(root=str(root), pairs=str(other), sizes=[112])).evaluate(IdentityEmbedder(odd=False),
                                                                                    progress=False)
    assert result.settings["folds"] == 2 and result.settings["pairs_file"] == str(other)
    assert result.results["112"]["accuracy"] == 1.0


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LFW(LFWParams(root=str(tmp_path / "nope"))).evaluate(IdentityEmbedder(), progress=False)
    root, lines = write_lfw(tmp_path)
    pairs = tmp_path / "pairs.txt"
    with pytest.raises(DataError, match="pairs file not found"):
        LFW(LFWParams(root=str(root), pairs=str(tmp_path / "missing.txt"))).load()

    pairs.write_text("\n".join(lines[:5] + ["Zed_Z\t1\t2"] + lines[6:]) + "\n")
    with pytest.raises(DataError) as err:
        LFW(LFWParams(root=str(root))).load()
    assert f"{pairs}:6" in str(err.value) and "Zed_Z_0001" in str(err.value)

    pairs.write_text("\n".join(lines[:3] + ["Anna_A\t1"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"pairs.txt:4: expected 3 fields"):
        LFW(LFWParams(root=str(root))).load()

    pairs.write_text("\n".join(lines[:3] + ["Anna_A\tone\t2"] + lines[4:]) + "\n")
    with pytest.raises(DataError, match=r"pairs.txt:4: the image number 'one'"):
        LFW(LFWParams(root=str(root))).load()

    pairs.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="announces 10 folds x 3 \\+ 3 pairs = 60 pair lines, found 59"):
        LFW(LFWParams(root=str(root))).load()

    pairs.write_text("ten\tthree\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(DataError, match="pairs.txt:1: expected a header"):
        LFW(LFWParams(root=str(root))).load()
