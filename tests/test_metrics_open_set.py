"""Open-set (watch-list) identification metrics on hand-computed tiny cases (PROTOCOLS.md §4.3)."""

from __future__ import annotations

import numpy as np
import pytest

from lrfr_plugins.metrics import (
    curve_auc,
    open_set_curve,
    open_set_identification,
    open_set_scores,
    subject_templates,
    tpir_at_fpir,
)

NEG_INF = -np.inf
# 4 mates (one not within rank: -inf), 5 unmated top-1 scores.
MATE = [0.9, 0.6, NEG_INF, 0.3]
UNMATED = [0.8, 0.5, 0.4, 0.2, 0.1]


def test_exact_curve_by_hand():
    fpir, tpir, thr = open_set_curve(MATE, UNMATED, thresholds="exact")
    np.testing.assert_allclose(fpir, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(tpir, [0.25, 0.25, 0.5, 0.5, 0.75, 0.75])
    assert thr[0] > 0.8 and list(thr[1:]) == [0.8, 0.5, 0.4, 0.2, 0.1]
    # 0.2*0.25 + 0.2*0.375 + 0.2*0.5 + 0.2*0.625 + 0.2*0.75
    assert curve_auc(fpir, tpir) == pytest.approx(0.5)


def test_conservative_and_nearest_reading():
    fpir, tpir, _ = open_set_curve(MATE, UNMATED, thresholds="exact")
    assert tpir_at_fpir(fpir, tpir, 0.3, rule="conservative") == 0.25  # FPIR 0.2 is the last <= 0.3
    assert tpir_at_fpir(fpir, tpir, 0.5, rule="conservative") == 0.5
    assert tpir_at_fpir(fpir, tpir, 0.1, rule="conservative") == 0.25  # FPIR 0
    assert tpir_at_fpir([0.5], [0.9], 0.1, rule="conservative") == 0.0  # no point with FPIR <= 0.1
    assert tpir_at_fpir(fpir, tpir, 0.45, rule="nearest") == 0.5  # FPIR 0.4 is nearest
    assert tpir_at_fpir(fpir, tpir, 0.75, rule="nearest") == 0.75  # FPIR 0.8
    with pytest.raises(ValueError, match="rule"):
        tpir_at_fpir(fpir, tpir, 0.3, rule="closest")


def test_grid_curve_keeps_one_point_per_fpir():
    # unmated top-1 in [0, 1], 4 steps: thresholds 0, .25, .5, .75 -> FPIR 1, .5, .5, .5
    fpir, tpir, thr = open_set_curve([0.6, 0.3, 0.8], [0.0, 1.0], thresholds="grid", n_steps=4)
    # at FPIR .5 the lowest grid threshold (.25) is kept: all three mates >= .25
    np.testing.assert_allclose(fpir, [0.5, 1.0])
    np.testing.assert_allclose(tpir, [1.0, 1.0])
    np.testing.assert_allclose(thr, [0.25, 0.0])
    assert curve_auc(fpir, tpir) == pytest.approx(0.5)


def test_grid_has_1000_steps_from_the_unmated_scores():
    u = np.linspace(0.0, 1.0, 5001)
    fpir, _, thr = open_set_curve([0.5], u)
    assert thr.size == 1000 and thr[-1] == 0.0 and thr[0] == pytest.approx(0.999)
    assert fpir[-1] == 1.0 and fpir[0] == pytest.approx(6 / 5001)  # scores >= 0.999: 0.9992..1.0


def test_open_set_scores_rank_cut_and_best_image():
    # gallery columns: subjects 1, 1, 2, 3 ; probe 0 is subject 1, probe 1 subject 3
    mated = np.array([[0.2, 0.7, 0.1, 0.0],
                      [0.9, 0.8, 0.6, 0.5]])
    unmated = np.array([[0.1, 0.3, 0.2, 0.0], [0.0, -0.1, -0.2, 0.4]])
    mate, top1 = open_set_scores(mated, [1, 3], [1, 1, 2, 3], unmated, rank=2)
    # probe 0: subject 1 scores its best image 0.7, rank 1; probe 1: subject 3 (0.5) ranks 3rd > 2 -> -inf
    np.testing.assert_array_equal(mate, [0.7, NEG_INF])
    np.testing.assert_array_equal(top1, [0.3, 0.4])
    mate3, _ = open_set_scores(mated, [1, 3], [1, 1, 2, 3], unmated, rank=3)
    np.testing.assert_array_equal(mate3, [0.7, 0.5])


def test_ties_in_rank_are_pessimistic_by_default():
    mated = np.array([[0.5, 0.5]])
    unmated = np.array([[0.0, 0.0]])
    assert open_set_scores(mated, [2], [1, 2], unmated, rank=1)[0][0] == NEG_INF
    assert open_set_scores(mated, [2], [1, 2], unmated, rank=1, ties="optimistic")[0][0] == 0.5


def test_subject_templates_average_normalised_embeddings():
    emb = np.array([[2.0, 0.0], [0.0, 5.0], [0.0, -3.0]])
    t, s = subject_templates(emb, ["b", "b", "a"])
    assert list(s) == ["a", "b"]
    np.testing.assert_allclose(t, [[0.0, -1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    with pytest.raises(ValueError, match="zero vector"):
        subject_templates(np.array([[1.0, 0.0], [-1.0, 0.0]]), [1, 1])


def test_open_set_identification_all_keys():
    # 3 gallery subjects; each mated probe scores its own subject on the diagonal
    mated_sim = np.array([[0.9, 0.1, 0.0], [0.2, 0.6, 0.0], [0.0, 0.0, 0.3]])
    unmated_sim = np.array([[0.8, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.4], [0.2, 0.0, 0.0], [0.1, 0.0, 0.0]])
    res = open_set_identification(mated_sim, [0, 1, 2], [0, 1, 2], unmated_sim, thresholds="exact",
                                  rule="conservative", fpirs=(0.3, 0.5))
    # mates 0.9, 0.6, 0.3; unmated 0.8 .5 .4 .2 .1 -> FPIR 0.2: TPIR 1/3; FPIR 0.4: 2/3
    assert res["tpir@fpir=0.3"] == pytest.approx(1 / 3)
    assert res["tpir@fpir=0.5"] == pytest.approx(2 / 3)
    assert res["realised_fpir@0.3"] == pytest.approx(0.2)
    assert res["n_mated"] == 3 and res["n_unmated"] == 5
    assert res["auc_tpir_fpir"] == pytest.approx(curve_auc(res["fpir"], res["tpir"]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="mated and unmated"):
        open_set_curve([], [0.1])
    with pytest.raises(ValueError, match="same gallery"):
        open_set_scores(np.zeros((1, 2)), [1], [1, 2], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="thresholds"):
        open_set_curve([0.1], [0.1], thresholds="fine")
    with pytest.raises(ValueError, match="sorted"):
        curve_auc([1.0, 0.0], [0.0, 1.0])
