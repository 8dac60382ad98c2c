"""The ``bin`` protocol: InsightFace .bin files, the insightface preset and REFERENCE §12's 10-fold vector."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch

from lrfr_plugins.builtin.protocols.pairs import evaluate_pairs
from lrfr_plugins.builtin.protocols.verification_bin import VerificationBin, VerificationBinParams
from lrfr_plugins.errors import DataError
from lrfr_plugins.formats.images import encode_image
from lrfr_plugins.formats.verification_bin import write_verification_bin
from lrfr_plugins.metrics.verification import insightface_10fold
from lrfr_plugins.testing import check_protocol

TINY = pathlib.Path(__file__).parent / "fixtures" / "mxnet" / "verification" / "tiny_py3.bin"


def reference_vector() -> tuple[np.ndarray, np.ndarray]:
    """REFERENCE §12: 600 pairs, unit embeddings interleaved (e1 at even rows, e2 at odd rows), and issame."""
    rs = np.random.RandomState(0)
    issame = np.array([True, False] * 300)
    e1 = rs.randn(600, 16)
    noise = rs.randn(600, 16)
    e2 = np.where(issame[:, None], e1 + 0.9 * noise, noise)
    emb = np.empty((1200, 16))
    emb[0::2], emb[1::2] = e1, e2
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), issame


def index_image(i: int) -> np.ndarray:
    """A flip-symmetric 112x112 RGB image that encodes i in (G, B)."""
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 1], img[..., 2] = i // 256, i % 256
    return img


def decode_index(images: torch.Tensor) -> np.ndarray:
    return (images[:, 1, 0, 0].long() * 256 + images[:, 2, 0, 0].long()).numpy()


class TableEmbedder:
    def __init__(self, table: np.ndarray):
        self.table, self.seen = table, []

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        self.seen.append(images.clone())
        return self.table[decode_index(images)]


@pytest.fixture(scope="module")
def reference_bin(tmp_path_factory):
    emb, issame = reference_vector()
    path = tmp_path_factory.mktemp("bin") / "ref.bin"
    write_verification_bin(path, [encode_image(index_image(i), fmt=".png") for i in range(1200)], issame.tolist())
    return path, emb


def test_insightface_preset_reproduces_reference_vector(reference_bin):
    path, emb = reference_bin
    embedder = TableEmbedder(emb)
    result = VerificationBin(VerificationBinParams(path=str(path), sizes=[112])).evaluate(embedder, progress=False)
    r = result.results["112"]
    assert round(r["accuracy"], 6) == 0.976667
    assert round(r["std"], 6) == 0.016997
    assert result.preset == "insightface" and result.protocol == "bin" and result.settings["set"] == "ref"
    s = result.settings
    assert (s["procedure"], s["std_kind"], s["flip"], s["folds"]) == ("insightface", "population-std", True, 10)
    assert "squared L2" in s["threshold_units"]
    # per fold, as arcface_torch prints them, and bit-equal to the metric on the original embeddings
    direct = insightface_10fold(emb[0::2], emb[1::2], np.array([True, False] * 300))
    np.testing.assert_allclose(direct.fold_accuracies,
                               [0.9833, 1.0, 0.95, 1.0, 0.9667, 0.9833, 0.9833, 0.9833, 0.9667, 0.95], atol=5e-5)
    assert r["accuracy"] == direct.accuracy and r["std"] == direct.std
    assert r["threshold"] == pytest.approx(np.mean(direct.thresholds))
    assert 0 <= r["threshold"] < 4
    # flip fusion: every image was embedded once, in the same call as its mirror image
    assert [len(b) for b in embedder.seen] == [2048, 352]  # chunks of 1024 images + their mirrors
    for batch in embedder.seen:
        half = len(batch) // 2
        assert torch.equal(batch[half:], batch[:half].flip(-1))
    assert sorted(np.concatenate([decode_index(b[:len(b) // 2]) for b in embedder.seen])) == list(range(1200))


def test_flip_fusion_sums_before_normalising():
    """Embeddings of an image and of its mirror differ; the core must score normalize(e + e_flip)."""
    rng = np.random.default_rng(3)
    n = 40
    images = torch.zeros((n, 3, 112, 112), dtype=torch.uint8)
    images[:, 1] = torch.arange(n, dtype=torch.uint8)[:, None, None]
    images[:, 0, :, 0] = 255  # marker in the left column: the mirror has it on the right
    straight, mirrored = rng.standard_normal((n, 8)) * 3, rng.standard_normal((n, 8))

    def embed(x):
        idx = x[:, 1, 0, 0].long().numpy()
        is_mirror = (x[:, 0, 0, 111] == 255).numpy()
        return np.where(is_mirror[:, None], mirrored[idx], straight[idx])

    pairs = np.stack([np.arange(0, n, 2), np.arange(1, n, 2)], 1)
    issame = np.tile([True, False], n // 4)
    fused = straight + mirrored
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    want = insightface_10fold(fused[pairs[:, 0]], fused[pairs[:, 1]], issame, n_folds=2)
    got = evaluate_pairs(images, pairs, issame, embed, sizes=[112], preset="insightface", folds=2, progress=False)
    assert got.results["112"]["accuracy"] == want.accuracy
    assert got.results["112"]["threshold"] == pytest.approx(np.mean(want.thresholds))
    plain = straight / np.linalg.norm(straight, axis=1, keepdims=True)
    no_flip = evaluate_pairs(images, pairs, issame, embed, sizes=[112], preset="insightface", flip=False, folds=2,
                             progress=False)
    assert no_flip.results["112"]["accuracy"] == \
        insightface_10fold(plain[pairs[:, 0]], plain[pairs[:, 1]], issame, n_folds=2).accuracy
    assert no_flip.settings["flip"] is False


def test_sizes_degrade_and_embed_each_image_once(reference_bin):
    path, emb = reference_bin
    embedder = TableEmbedder(emb)
    result = VerificationBin(VerificationBinParams(path=str(path), sizes=[112, 14], preset="lozhkina")) \
        .evaluate(embedder, progress=False)
    assert [len(b) for b in embedder.seen] == [1024, 176, 1024, 176]  # chunks of 1024; no flip; once per size
    assert sorted(decode_index(torch.cat(embedder.seen[2:]))) == list(range(1200))  # constant images survive 14 px
    assert result.results["14"] == result.results["112"]
    assert set(result.results) == {"112", "14"} and result.settings["std_kind"] == "sem"
    assert result.rows[1]["resolution"] == "14px" and 0.9 < result.rows[1]["auc"] <= 1


def test_committed_tiny_bin():
    protocol = VerificationBin(VerificationBinParams(path=str(TINY), sizes=[112, 7], folds=2))
    images, pairs, issame = protocol.load()
    assert images.shape == (8, 3, 112, 112) and images.dtype == torch.uint8
    assert pairs.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]] and issame.tolist() == [True, False, True, False]
    check_protocol(protocol)
    seen = []

    def embed(x):
        seen.append(x.clone())
        return x.float().mean((2, 3)).numpy() + 1.0

    result = protocol.evaluate(embed, progress=False)
    assert set(result.results) == {"112", "7"} and result.settings["pairs"] == 4
    assert [len(b) for b in seen] == [16, 16]  # 8 images + their mirrors, per size
    assert not torch.equal(seen[0], seen[1])  # degraded at 7 px


def test_other_sizes_are_resized(tmp_path, caplog):
    blobs = [encode_image(np.full((100, 100, 3), 5 * i, np.uint8), fmt=".png") for i in range(40)]
    path = tmp_path / "odd.bin"
    write_verification_bin(path, blobs, [True, False] * 10)
    with caplog.at_level("WARNING", logger="lrfr"):
        images = VerificationBin(VerificationBinParams(path=str(path))).load()[0]
    assert images.shape == (40, 3, 112, 112)
    assert sum("not 112x112" in r.getMessage() for r in caplog.records) == 1


def test_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        VerificationBin(VerificationBinParams(path=str(tmp_path / "lfw.bin"))).evaluate(lambda x: None,
                                                                                          progress=False)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="bad.bin"):
        VerificationBin(VerificationBinParams(path=str(bad))).load()
    with pytest.raises(ValueError, match="procedure"):
        VerificationBinParams(path="x", procedure="best")
    with pytest.raises(ValueError, match="bicubic-pil"):
        VerificationBinParams(path="x", down="bicubic-pil", antialias=False)
