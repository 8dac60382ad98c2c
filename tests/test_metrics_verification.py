"""Tests for lrfr_plugins.metrics.verification (numpy only, well under 5 s)."""

import json

import numpy as np
import pytest

from lrfr_plugins.metrics.verification import (
    FoldResult,
    cosine_scores,
    insightface_10fold,
    lozhkina_10fold,
    roc_auc,
    roc_curve,
    tar_at_far,
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _reference_pairs():
    """The project's insightface reference vector (600 pairs, 16-D)."""
    rs = np.random.RandomState(0)
    issame = np.array([True, False] * 300)
    e1 = rs.randn(600, 16)
    noise = rs.randn(600, 16)
    rows = []
    for i in range(600):
        rows.append(e1[i])
        rows.append(e1[i] + 0.9 * noise[i] if issame[i] else noise[i])
    emb = np.asarray(rows)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return emb[0::2], emb[1::2], issame


def _naive_insightface(e1, e2, issame, n_folds=10):
    """Loop-by-loop transcription of calculate_roc, to cross-check the vectorised code."""
    thresholds = np.arange(0, 4, 0.01)
    dist = np.sum(np.square(e1 - e2), 1)
    n = len(issame)
    sizes = [n // n_folds + (1 if i < n % n_folds else 0) for i in range(n_folds)]
    starts = np.cumsum([0] + sizes)
    accs, thrs = [], []
    for k in range(n_folds):
        test = np.arange(starts[k], starts[k + 1])
        train = np.setdiff1d(np.arange(n), test)

        def acc(thr, idx):
            pred = dist[idx] < thr
            return np.sum(pred == issame[idx]) / idx.size

        best = int(np.argmax([acc(t, train) for t in thresholds]))
        thrs.append(thresholds[best])
        accs.append(acc(thresholds[best], test))
    return np.mean(accs), np.std(accs), accs, thrs


def _naive_lozhkina(scores, issame, n_folds=10, n_thr=1000):
    """Loop-by-loop transcription of FaceX-Zoo lfw_evaluator."""
    block = len(scores) // n_folds
    s = scores[: block * n_folds].reshape(n_folds, block)
    lab = issame[: block * n_folds].reshape(n_folds, block)
    accs, thrs = [], []
    for k in range(n_folds):
        keep = np.arange(n_folds) != k
        ts, tl = s[keep].ravel(), lab[keep].ravel()
        pos, neg = ts[tl], ts[~tl]
        step = (ts.max() - ts.min()) / n_thr
        grid = ts.min() + step * np.array(range(1, n_thr + 1))
        j = [np.sum(pos > t) / pos.size - np.sum(neg > t) / neg.size for t in grid]
        thr = grid[int(np.argmax(j))]
        thrs.append(thr)
        accs.append((np.sum(s[k][lab[k]] > thr) + np.sum(s[k][~lab[k]] < thr)) / block)
    return np.mean(accs), np.std(accs, ddof=1) / np.sqrt(n_folds), accs, thrs


# --------------------------------------------------------------------------
# insightface
# --------------------------------------------------------------------------


def test_insightface_reference_vector():
    e1, e2, issame = _reference_pairs()
    r = insightface_10fold(e1, e2, issame)
    assert r.procedure == "insightface"
    assert r.std_kind == "population-std"
    assert r.accuracy == pytest.approx(0.976667, abs=1e-6)
    assert r.std == pytest.approx(0.016997, abs=1e-6)
    expected = [0.9833, 1.0, 0.95, 1.0, 0.9667, 0.9833, 0.9833, 0.9833, 0.9667, 0.95]
    assert np.round(r.fold_accuracies, 4).tolist() == expected
    assert len(r.thresholds) == 10


def test_insightface_matches_naive_loop_with_uneven_folds():
    # 607 pairs: the first 7 folds hold 61 pairs, the rest 60 (sklearn KFold).
    rs = np.random.RandomState(1)
    n = 607
    issame = rs.rand(n) < 0.5
    e1 = rs.randn(n, 8)
    e2 = np.where(issame[:, None], e1 + 1.2 * rs.randn(n, 8), rs.randn(n, 8))
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 /= np.linalg.norm(e2, axis=1, keepdims=True)
    r = insightface_10fold(e1, e2, issame)
    mean, std, accs, thrs = _naive_insightface(e1, e2, issame)
    assert r.accuracy == pytest.approx(mean, abs=1e-12)
    assert r.std == pytest.approx(std, abs=1e-12)
    np.testing.assert_allclose(r.fold_accuracies, accs, atol=1e-12)
    np.testing.assert_array_equal(r.thresholds, thrs)


def test_insightface_separable_and_strict_less():
    # distance 0 for same pairs, 4 for different pairs -> perfect accuracy;
    # threshold 0 is never chosen because "same" needs dist < thr.
    v = np.eye(4)[np.arange(20) % 4]
    issame = np.array([True, False] * 10)
    e2 = np.where(issame[:, None], v, -v)
    r = insightface_10fold(v, e2, issame)
    assert r.accuracy == 1.0 and r.std == 0.0
    assert all(t == 0.01 for t in r.thresholds)  # first best threshold


# --------------------------------------------------------------------------
# lozhkina / FaceX-Zoo
# --------------------------------------------------------------------------


def test_lozhkina_perfectly_separable():
    issame = np.array([True, False] * 50)
    scores = np.where(issame, 0.8, 0.1)
    r = lozhkina_10fold(scores, issame)
    assert r.procedure == "lozhkina" and r.std_kind == "sem"
    assert r.accuracy == 1.0 and r.std == 0.0
    assert r.fold_accuracies == (1.0,) * 10


def test_lozhkina_threshold_hugs_highest_train_negative():
    # First argmax of J picks the *lowest* separating grid value, i.e. just
    # above the highest train negative, not a midpoint.  Held-out negatives
    # a hair higher than every train negative are then all rejected wrongly,
    # even though train and test are each perfectly separable.
    issame = np.array([True, False] * 50)
    scores = np.where(issame, 0.8, 0.1) + np.linspace(0, 0.05, 100)
    r = lozhkina_10fold(scores, issame)
    train = scores[:90]
    top_neg = train[~issame[:90]].max()
    step = (train.max() - train.min()) / 1000
    assert top_neg < r.thresholds[9] <= top_neg + step
    assert r.fold_accuracies[9] == 0.5  # all 5 held-out negatives above thr
    assert r.fold_accuracies[:9] == (1.0,) * 9


def test_lozhkina_hand_case_threshold_and_tie_rule():
    # Two folds, 4 thresholds, all grid values exact in binary.
    # Block A: pos [1.0, 0.5], neg [0.5, 0.0];  block B: pos [1.0, 0.6], neg [0.0, 0.3].
    scores = np.array([1.0, 0.5, 0.5, 0.0, 1.0, 0.6, 0.0, 0.3])
    issame = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    r = lozhkina_10fold(scores, issame, n_folds=2, n_thresholds=4)
    # Fold A is tested with B's threshold. Grid on B: 0.25, 0.5, 0.75, 1.0;
    # J = 0.5, 1.0, 0.5, 0.0 -> thr 0.5. On A, the positive 0.5 and the
    # negative 0.5 both tie the threshold and both count as errors -> 2/4.
    # Fold B uses A's grid 0.25, 0.5, 0.75, 1.0 with J = 0.5, 0.5, 0.5, 0.0:
    # the first maximum wins -> thr 0.25; B's negative 0.3 > 0.25 -> 3/4.
    assert r.thresholds == (0.5, 0.25)
    assert r.fold_accuracies == (0.5, 0.75)
    assert r.accuracy == 0.625
    # SEM: std([0.5, 0.75], ddof=1) / sqrt(2) = 0.17678 / 1.41421 = 0.125
    assert r.std == pytest.approx(0.125, abs=1e-12)


def test_lozhkina_drops_trailing_pairs():
    issame = np.array([True, False] * 50)
    scores = np.where(issame, 0.9, 0.1)
    # three extra pairs, all wrongly scored: ignored because 103 // 10 = 10.
    scores_x = np.r_[scores, 0.0, 0.0, 1.0]
    issame_x = np.r_[issame, True, True, False]
    assert lozhkina_10fold(scores_x, issame_x).fold_accuracies == (1.0,) * 10


def test_lozhkina_matches_naive_loop():
    rs = np.random.RandomState(2)
    n = 1203
    issame = rs.rand(n) < 0.5
    scores = np.where(issame, rs.normal(0.5, 0.2, n), rs.normal(0.1, 0.2, n))
    r = lozhkina_10fold(scores, issame)
    mean, sem, accs, thrs = _naive_lozhkina(scores, issame)
    assert r.accuracy == pytest.approx(mean, abs=1e-12)
    assert r.std == pytest.approx(sem, abs=1e-12)
    np.testing.assert_allclose(r.fold_accuracies, accs, atol=1e-12)
    np.testing.assert_array_equal(r.thresholds, thrs)


def test_lozhkina_class_pure_folds_when_positives_stacked():
    rs = np.random.RandomState(3)
    pos = rs.normal(0.55, 0.15, 300)
    neg = rs.normal(0.15, 0.15, 300)
    scores = np.r_[pos, neg]
    issame = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    r = lozhkina_10fold(scores, issame)
    blocks = scores.reshape(10, 60)
    labels = issame.reshape(10, 60)
    assert labels[:5].all() and not labels[5:].any()  # folds 1-5 all positive
    for k in range(10):
        thr = r.thresholds[k]
        if k < 5:  # accuracy of a positive-only fold is its TPR
            expected = np.mean(blocks[k] > thr)
        else:  # ... and of a negative-only fold its TNR
            expected = np.mean(blocks[k] < thr)
        assert r.fold_accuracies[k] == pytest.approx(expected, abs=1e-12)
    # same scores interleaved: every fold mixes classes, accuracies differ.
    order = np.ravel(np.column_stack([np.arange(300), 300 + np.arange(300)]))
    mixed = lozhkina_10fold(scores[order], issame[order])
    assert np.std(mixed.fold_accuracies) < np.std(r.fold_accuracies)


def test_lozhkina_train_part_without_negatives_is_defined():
    # n_folds=2: the train half of fold 1 has no negatives (FPR undefined -> 0).
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.1])
    issame = np.array([1, 1, 1, 1, 0, 0])
    # block 0 = pairs 0-2 (pos only), block 1 = pairs 3-5 (pos, neg, neg)
    r = lozhkina_10fold(scores, issame, n_folds=2, n_thresholds=10)
    assert np.all(np.isfinite(r.fold_accuracies)) and np.all(np.isfinite(r.thresholds))
    # fold 1 trains on block 0 only: J = TPR, first max at k=1 -> 0.7 + 0.02
    assert r.thresholds[1] == pytest.approx(0.72)
    assert r.fold_accuracies[1] == pytest.approx(2 / 3)  # 0.6 positive fails


def test_lozhkina_train_part_without_positives_is_defined():
    # block 0 holds negatives only; fold 1 trains on it with TPR := 0, so J = -FPR
    # and the first grid value with FPR = 0 is chosen: the highest negative.
    scores = np.array([0.25, 0.5, 0.75, 1.0, 0.5, 0.0])
    issame = np.array([0, 0, 0, 1, 0, 0])
    r = lozhkina_10fold(scores, issame, n_folds=2, n_thresholds=4)
    assert r.thresholds[1] == 0.75
    assert r.fold_accuracies[1] == 1.0


# --------------------------------------------------------------------------
# scores, ROC, TAR@FAR, AUC
# --------------------------------------------------------------------------


def test_cosine_scores_normalises():
    a = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[5.0, 0.0], [-2.0, -2.0], [7.0, 0.0]])
    np.testing.assert_allclose(cosine_scores(a, b), [1.0, -1.0, 0.0], atol=1e-12)


def test_roc_curve_hand_made():
    scores = np.array([0.3, 0.9, 0.8, 0.5, 0.8])
    issame = np.array([1, 1, 1, 0, 0])
    fpr, tpr, thr = roc_curve(scores, issame)
    # 0.8 is tied between a positive and a negative: one diagonal step.
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.8, 0.5, 0.3])


def test_tar_at_far_both_rules():
    fpr = np.array([0, 0, 0.5, 1, 1])
    tpr = np.array([0, 1 / 3, 2 / 3, 2 / 3, 1])
    # conservative: best existing point not exceeding the FAR
    assert tar_at_far(fpr, tpr, 0.0) == pytest.approx(1 / 3)
    assert tar_at_far(fpr, tpr, 0.4) == pytest.approx(1 / 3)
    assert tar_at_far(fpr, tpr, 0.5) == pytest.approx(2 / 3)
    assert tar_at_far(fpr, tpr, 1.0) == pytest.approx(1.0)
    # interpolated: linear between neighbouring points, top of vertical steps
    for far, want in [(0.0, 1 / 3), (0.25, 0.5), (0.4, 0.6), (0.5, 2 / 3), (0.75, 2 / 3), (1.0, 1.0)]:
        got = tar_at_far(fpr, tpr, far, rule="interpolated")
        assert got == pytest.approx(want)
        assert got == pytest.approx(np.interp(far, fpr, tpr))
    # a curve that does not reach FPR 0: nothing qualifies -> accept nothing
    assert tar_at_far([0.2, 1.0], [0.5, 1.0], 0.1) == 0.0


def test_auc_perfect_reversed_and_ties():
    issame = np.array([1, 1, 0, 0, 1, 0])
    good = np.where(issame, 0.9, 0.1) + np.arange(6) * 1e-3
    assert roc_auc(*roc_curve(good, issame)[:2]) == 1.0
    assert roc_auc(*roc_curve(-good, issame)[:2]) == 0.0
    assert roc_auc(*roc_curve(np.zeros(6), issame)[:2]) == 0.5  # all tied


def test_fold_result_as_dict_is_json():
    r = lozhkina_10fold(np.where(np.arange(20) % 2 == 0, 0.9, 0.1), np.arange(20) % 2 == 0)
    d = r.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d) == {"procedure", "accuracy", "std", "std_kind", "fold_accuracies", "thresholds"}
    assert isinstance(r, FoldResult)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

_S = np.linspace(0, 1, 20)
_L = np.arange(20) % 2 == 0
_E = np.random.RandomState(4).randn(20, 4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: lozhkina_10fold(_S, _L[:-1]), "length mismatch"),
        (lambda: insightface_10fold(_E, _E[:-1], _L), "length mismatch"),
        (lambda: insightface_10fold(_E, _E, _L[:-1]), "length mismatch"),
        (lambda: roc_curve(_S, _L[:5]), "length mismatch"),
        (lambda: cosine_scores(_E, _E[:3]), "length mismatch"),
        (lambda: tar_at_far([0, 1], [0, 0.5, 1], 0.1), "length mismatch"),
        (lambda: lozhkina_10fold(_S, np.where(_L, 2, 0)), "boolean-like"),
        (lambda: lozhkina_10fold(_S, np.array(["a"] * 20)), "boolean-like"),
        (lambda: insightface_10fold(_E, _E, _L * 0.5), "boolean-like"),
        (lambda: lozhkina_10fold(np.r_[np.nan, _S[1:]], _L), "NaN"),
        (lambda: roc_curve(np.r_[np.inf, _S[1:]], _L), "NaN"),
        (lambda: insightface_10fold(np.r_[[[np.nan] * 4], _E[1:]], _E, _L), "NaN"),
        (lambda: lozhkina_10fold(_S[:9], _L[:9]), "fewer pairs"),
        (lambda: insightface_10fold(_E[:9], _E[:9], _L[:9]), "fewer pairs"),
        (lambda: lozhkina_10fold(_S, np.ones(20, bool)), "only same"),
        (lambda: insightface_10fold(_E, _E, np.zeros(20, bool)), "only different"),
        (lambda: roc_curve(_S, np.ones(20)), "only same"),
        (lambda: lozhkina_10fold(_S, _L, n_folds=1), "n_folds"),
        (lambda: lozhkina_10fold(_S, _L, n_thresholds=0), "n_thresholds"),
        (lambda: cosine_scores(np.zeros((2, 3)), np.ones((2, 3))), "zero norm"),
        (lambda: tar_at_far([0, 1], [0, 1], 1.5), "far"),
        (lambda: tar_at_far([0, 1], [0, 1], 0.1, rule="nearest"), "rule"),
        (lambda: tar_at_far([0.5, 0.2], [0, 1], 0.1), "non-decreasing"),
        (lambda: roc_auc([0.0], [0.0]), "two ROC points"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
