"""Tests for lrfr_plugins.metrics.identification against hand-computed values (numpy only, well under 1 s)."""

import numpy as np
import pytest

from lrfr_plugins.metrics.identification import cmc, rank_k_accuracy, rank_of_true, similarity_matrix

# 3 probes x 4 gallery subjects (labels 10, 20, 30, 40 in gallery order 20, 10, 40, 30)
SIM = np.array([
    [0.9, 0.1, 0.2, 0.3],  # true 20 (col 0): best -> rank 1
    [0.5, 0.4, 0.6, 0.1],  # true 10 (col 1): 0.5 and 0.6 above -> rank 3
    [0.2, 0.7, 0.1, 0.6],  # true 30 (col 3): 0.7 above -> rank 2
])
GALLERY = np.array([20, 10, 40, 30])
PROBES = np.array([20, 10, 30])


def test_rank_of_true_hand_computed():
    assert rank_of_true(SIM, PROBES, GALLERY).tolist() == [1, 3, 2]
    assert rank_of_true(SIM, PROBES, GALLERY, ties="optimistic").tolist() == [1, 3, 2]


def test_ties_pessimistic_vs_optimistic():
    sim = np.array([
        [0.5, 0.5, 0.5],  # true a tied with both impostors
        [0.8, 0.5, 0.5],  # true b tied with c, below a
        [0.1, 0.2, 0.3],  # true c, no tie
    ])
    labels = np.array(["a", "b", "c"])
    assert rank_of_true(sim, labels, labels).tolist() == [3, 3, 1]
    assert rank_of_true(sim, labels, labels, ties="optimistic").tolist() == [1, 2, 1]
    # pessimistic ties do not depend on the gallery order (argmax would)
    perm = [2, 0, 1]
    assert rank_of_true(sim[:, perm], labels, labels[perm]).tolist() == [3, 3, 1]


def test_several_gallery_images_per_subject_rank_subjects():
    # gallery: subject 1 twice, subject 2 once; the subject scores its best image
    sim = np.array([[0.2, 0.9, 0.5],   # true 1: best image 0.9 -> rank 1
                    [0.6, 0.1, 0.5]])  # true 2: 0.5 < subject 1's 0.6 -> rank 2 (of 2 subjects, not 3 images)
    ranks = rank_of_true(sim, [1, 2], [1, 1, 2])
    assert ranks.tolist() == [1, 2]
    assert cmc(ranks, 2).tolist() == [0.5, 1.0]


def test_cmc_and_rank_k():
    ranks = np.array([1, 3, 2, 1, 5])
    rates = cmc(ranks, 6)
    np.testing.assert_allclose(rates, [0.4, 0.6, 0.8, 0.8, 1.0, 1.0])
    assert rank_k_accuracy(ranks, 1) == pytest.approx(0.4)
    assert rank_k_accuracy(ranks, 3) == pytest.approx(0.8)
    assert rank_k_accuracy(ranks, 100) == 1.0
    # ranks beyond max_rank never count
    np.testing.assert_allclose(cmc(ranks, 2), [0.4, 0.6])
    # integer-valued floats are accepted
    np.testing.assert_allclose(cmc(ranks.astype(float), 3), [0.4, 0.6, 0.8])


def test_cmc_monotone_reaches_one_at_gallery_size():
    rng = np.random.default_rng(0)
    g = 7
    sim = rng.normal(size=(50, g))
    probes = rng.integers(0, g, size=50)
    ranks = rank_of_true(sim, probes, np.arange(g))
    assert ranks.min() >= 1 and ranks.max() <= g
    rates = cmc(ranks, 10)
    assert np.all(np.diff(rates) >= 0)
    assert rates[g - 1] == 1.0
    # rank-1 equals argmax accuracy when there are no ties
    assert rates[0] == pytest.approx(np.mean(sim.argmax(1) == probes))


def test_similarity_matrix_is_cosine():
    p = np.array([[3.0, 0.0], [1.0, 1.0]])
    g = np.array([[0.0, 2.0], [5.0, 0.0]])
    np.testing.assert_allclose(similarity_matrix(p, g), [[0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])


@pytest.mark.parametrize("args, match", [
    ((np.zeros((2, 3)), [1, 2], [1, 2]), r"shape \(2, 3\).*expected \(2, 2\)"),
    ((np.zeros(3), [1], [1, 2, 3]), "must be 2-D"),
    ((np.array([[np.nan, 0.0]]), [1], [1, 2]), "NaN"),
    ((np.zeros((2, 2)), [1, 3], [1, 2]), r"1 probe\(s\) belong to 1 subject\(s\) with no gallery image \(3\)"),
    ((np.zeros((1, 2)), ["a"], [1, 2]), "different kinds"),
    ((np.zeros((1, 2)), [[1]], [1, 2]), "probe_labels must be 1-D"),
])
def test_rank_of_true_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        rank_of_true(*args)


def test_rank_of_true_rejects_unknown_ties():
    with pytest.raises(ValueError, match="ties"):
        rank_of_true(SIM, PROBES, GALLERY, ties="average")


@pytest.mark.parametrize("ranks, k, match", [
    ([], 5, "empty"),
    ([0, 1], 5, ">= 1"),
    ([1.5], 5, "whole numbers"),
    ([[1]], 5, "1-D"),
    ([1, 2], 0, "max_rank must be an integer >= 1"),
    ([1, 2], 2.0, "max_rank must be an integer >= 1"),
])
def test_cmc_rejects(ranks, k, match):
    with pytest.raises(ValueError, match=match):
        cmc(ranks, k)


def test_similarity_rejects():
    with pytest.raises(ValueError, match="dimension"):
        similarity_matrix(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="zero-norm"):
        similarity_matrix(np.zeros((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="rank_k|k must"):
        rank_k_accuracy([1], 0)
