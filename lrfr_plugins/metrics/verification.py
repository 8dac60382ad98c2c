"""Pair-verification metrics shared by every verification protocol.

Two published "LFW 10-fold accuracy" procedures disagree on the distance,
the threshold grid, the selection rule, the fold layout and the spread
measure, so their numbers are not comparable.  Each lives here under its own
name and shares no step with the other:

* :func:`insightface_10fold` - deepinsight/insightface ``calculate_roc``
  (squared L2 distance, fixed grid, best train accuracy, population SD).
* :func:`lozhkina_10fold` - FaceX-Zoo ``lfw_evaluator`` as used by the
  founding study (cosine score, data-driven grid, Youden's J, SEM).

The threshold-free helpers (:func:`roc_curve`, :func:`tar_at_far`,
:func:`roc_auc`) use exact ROC points so that TAR@FAR does not depend on a
grid.  numpy only, so evaluation never pulls in sklearn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FoldResult",
    "insightface_10fold",
    "lozhkina_10fold",
    "cosine_scores",
    "roc_curve",
    "tar_at_far",
    "roc_auc",
]


@dataclass(frozen=True)
class FoldResult:
    """Outcome of one k-fold verification procedure.

    ``std`` is whatever spread the procedure itself reports (``std_kind``
    says which), so a table can quote it next to the published figure
    without silently converting one into the other.
    """

    accuracy: float
    std: float
    std_kind: str
    fold_accuracies: tuple[float, ...]
    thresholds: tuple[float, ...]
    procedure: str

    def as_dict(self) -> dict:
        """Plain Python types only, so ``json.dumps`` works directly."""
        return {
            "procedure": self.procedure,
            "accuracy": float(self.accuracy),
            "std": float(self.std),
            "std_kind": self.std_kind,
            "fold_accuracies": [float(a) for a in self.fold_accuracies],
            "thresholds": [float(t) for t in self.thresholds],
        }


# --------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------


def _as_labels(issame, n: int | None, name: str = "issame") -> np.ndarray:
    """Return ``issame`` as a 1-D bool array; reject anything but 0/1/bool."""
    arr = np.asarray(issame)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of booleans (one per pair), got shape {arr.shape}"
        )
    if arr.dtype == bool:
        labels = arr
    elif arr.dtype.kind in "iuf":
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN/inf; expected only True/False or 1/0")
        bad = ~np.isin(arr, (0, 1))
        if np.any(bad):
            examples = np.unique(arr[bad])[:5].tolist()
            raise ValueError(
                f"{name} must be boolean-like (True/False or 1/0), found values {examples}"
            )
        labels = arr.astype(bool)
    else:
        raise ValueError(
            f"{name} must be boolean-like (True/False or 1/0), got dtype {arr.dtype}"
        )
    if n is not None and labels.shape[0] != n:
        raise ValueError(
            f"length mismatch: {name} has {labels.shape[0]} entries but there are {n} pairs; "
            "expected one label per pair"
        )
    return labels


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one score per pair), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); expected finite numbers")
    return arr


def _as_embeddings(e1, e2) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(e1)
    b = np.asarray(e2)
    for name, x in (("embeddings1", a), ("embeddings2", b)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be 2-D (pairs x dim), got shape {x.shape}")
        if x.dtype.kind not in "iuf":
            raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN/inf values; expected finite numbers")
    if a.shape != b.shape:
        raise ValueError(
            f"length mismatch: embeddings1 has shape {a.shape}, embeddings2 has shape {b.shape}; "
            "expected identical shapes (one row per pair)"
        )
    return a, b


def _check_both_classes(labels: np.ndarray) -> None:
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.shape[0]:
        only = "same (positive)" if n_pos else "different (negative)"
        raise ValueError(
            f"issame holds only {only} pairs; expected both same and different pairs"
        )


def _check_folds(n: int, n_folds: int, minimum: int) -> None:
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise ValueError(f"n_folds must be an integer, got {n_folds!r}")
    if n_folds < minimum:
        raise ValueError(f"n_folds must be >= {minimum}, got {n_folds}")
    if n < n_folds:
        raise ValueError(
            f"fewer pairs ({n}) than folds ({n_folds}); expected at least one pair per fold"
        )


# --------------------------------------------------------------------------
# insightface
# --------------------------------------------------------------------------


def _kfold_bounds(n: int, n_folds: int) -> list[tuple[int, int]]:
    """Contiguous folds as sklearn ``KFold(shuffle=False)``: first n % k get one more."""
    sizes = np.full(n_folds, n // n_folds, dtype=int)
    sizes[: n % n_folds] += 1
    stops = np.cumsum(sizes)
    return [(int(s - z), int(s)) for s, z in zip(stops, sizes)]


def _correct_below(dist: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Correct decisions per threshold when "same" means ``dist < thr``.

    Sorting + searchsorted gives the same counts as comparing every pair
    with every threshold, without a thresholds x pairs matrix.
    """
    pos = np.sort(dist[labels])
    neg = np.sort(dist[~labels])
    tp = np.searchsorted(pos, thresholds, side="left")  # pos with dist < thr
    tn = neg.size - np.searchsorted(neg, thresholds, side="left")  # neg with dist >= thr
    return tp + tn


def insightface_10fold(
    embeddings1: np.ndarray,
    embeddings2: np.ndarray,
    issame: np.ndarray,
    *,
    n_folds: int = 10,
) -> FoldResult:
    """insightface ``calculate_roc`` accuracy, reproduced step for step.

    The caller passes flip-fused, L2-normalised embeddings (nothing is
    normalised here, as in the original).  Distance is the squared L2 norm of
    the difference (0..4 for unit vectors); "same" iff ``dist < thr`` with
    ``thr`` in ``np.arange(0, 4, 0.01)``.  Folds are sklearn
    ``KFold(n_folds, shuffle=False)`` over pairs in order; each fold takes the
    first threshold with the best train accuracy and is scored on its test
    part.  ``std`` is the population SD (``np.std``, ddof=0) as insightface
    prints it.  ``n_folds=1`` mirrors insightface's ``LFold``: train = test =
    all pairs.
    """
    e1, e2 = _as_embeddings(embeddings1, embeddings2)
    n = e1.shape[0]
    labels = _as_labels(issame, n)
    _check_folds(n, n_folds, minimum=1)
    _check_both_classes(labels)

    thresholds = np.arange(0, 4, 0.01)
    diff = np.subtract(e1, e2)
    dist = np.sum(np.square(diff), 1)

    if n_folds == 1:
        bounds = [(0, n)]
    else:
        bounds = _kfold_bounds(n, n_folds)
    # correct counts of every fold's test part; a train part is the rest.
    per_fold = [_correct_below(dist[a:b], labels[a:b], thresholds) for a, b in bounds]
    total = _correct_below(dist, labels, thresholds)

    accs, best_thr = [], []
    for (a, b), test_correct in zip(bounds, per_fold):
        if n_folds == 1:
            train_correct, n_train = test_correct, n
        else:
            train_correct, n_train = total - test_correct, n - (b - a)
        best = int(np.argmax(train_correct / n_train))  # first best, as np.argmax
        best_thr.append(float(thresholds[best]))
        accs.append(float(test_correct[best]) / (b - a))

    acc = np.asarray(accs)
    return FoldResult(
        accuracy=float(np.mean(acc)),
        std=float(np.std(acc)),
        std_kind="population-std",
        fold_accuracies=tuple(accs),
        thresholds=tuple(best_thr),
        procedure="insightface",
    )


# --------------------------------------------------------------------------
# lozhkina / FaceX-Zoo
# --------------------------------------------------------------------------


def _youden_threshold(scores: np.ndarray, labels: np.ndarray, n_thresholds: int) -> float:
    """FaceX-Zoo ``getThreshold``: first argmax of TPR - FPR on a min..max grid.

    Grid is ``min + k * (max - min) / n_thresholds`` for k = 1..n_thresholds
    (the minimum itself is never tried).  Rates use strict ``>``.  A train
    part without positives (or negatives) has an undefined TPR (or FPR); it
    is taken as 0 so the choice is still defined.  The original divides by
    zero there, gets NaN and np.argmax picks k = 1; with no negatives the
    rule here also gives k = 1, with no positives it gives the lowest
    threshold above every negative.
    """
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    smin, smax = np.min(scores), np.max(scores)
    step = (smax - smin) / n_thresholds
    grid = smin + step * np.arange(1, n_thresholds + 1)
    tp = pos.size - np.searchsorted(pos, grid, side="right")  # pos > thr
    fp = neg.size - np.searchsorted(neg, grid, side="right")  # neg > thr
    tpr = tp / pos.size if pos.size else np.zeros(grid.shape)
    fpr = fp / neg.size if neg.size else np.zeros(grid.shape)
    return float(grid[int(np.argmax(tpr - fpr))])


def lozhkina_10fold(
    scores: np.ndarray,
    issame: np.ndarray,
    *,
    n_folds: int = 10,
    n_thresholds: int = 1000,
) -> FoldResult:
    """FaceX-Zoo ``lfw_evaluator`` accuracy as used by the founding study.

    ``scores`` are cosine similarities (see :func:`cosine_scores`).  Folds are
    ``n_folds`` contiguous blocks of ``len(scores) // n_folds`` pairs; pairs
    past ``n_folds * (len // n_folds)`` are dropped, as the original fills a
    fixed 10 x 600 table.  Each held-out block gets the Youden threshold of
    the other blocks pooled (see :func:`_youden_threshold`) and is scored
    with positives correct iff ``score > thr`` and negatives iff
    ``score < thr`` (a tie is an error for both).

    The folds follow file order, so a list with positives stacked before
    negatives makes class-pure blocks whose accuracies are really TPR / TNR;
    that is the original's behaviour and kept on purpose.

    ``std`` is what the study reports: the standard error
    ``np.std(acc, ddof=1) / sqrt(n_folds)``, not a standard deviation.
    Scores are used in float64 (the original stored them as float32).
    """
    s = _as_scores(scores)
    n = s.shape[0]
    labels = _as_labels(issame, n)
    _check_folds(n, n_folds, minimum=2)
    _check_both_classes(labels)
    if isinstance(n_thresholds, bool) or not isinstance(n_thresholds, (int, np.integer)) \
            or n_thresholds < 1:
        raise ValueError(f"n_thresholds must be a positive integer, got {n_thresholds!r}")

    block = n // n_folds
    used = block * n_folds
    s_blocks = s[:used].reshape(n_folds, block)
    l_blocks = labels[:used].reshape(n_folds, block)

    accs, thrs = [], []
    train_mask = np.ones(n_folds, dtype=bool)
    for k in range(n_folds):
        train_mask[k] = False
        thr = _youden_threshold(
            s_blocks[train_mask].ravel(), l_blocks[train_mask].ravel(), n_thresholds
        )
        train_mask[k] = True
        ts, tl = s_blocks[k], l_blocks[k]
        correct = int(np.sum(ts[tl] > thr)) + int(np.sum(ts[~tl] < thr))
        accs.append(correct / block)
        thrs.append(thr)

    acc = np.asarray(accs)
    return FoldResult(
        accuracy=float(np.mean(acc)),
        std=float(np.std(acc, ddof=1) / np.sqrt(n_folds)),
        std_kind="sem",
        fold_accuracies=tuple(accs),
        thresholds=tuple(thrs),
        procedure="lozhkina",
    )


# --------------------------------------------------------------------------
# scores and threshold-free metrics
# --------------------------------------------------------------------------


def cosine_scores(embeddings1, embeddings2) -> np.ndarray:
    """Row-wise cosine similarity; both sides are L2-normalised here.

    A zero row has no direction, so it is rejected instead of yielding NaN.
    """
    a, b = _as_embeddings(embeddings1, embeddings2)
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError(
            "an embedding row has zero norm; expected non-zero vectors to L2-normalise"
        )
    return np.einsum("ij,ij->i", a / na[:, None], b / nb[:, None])


def roc_curve(scores, issame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC: one point per distinct score, "same" iff ``score >= thr``.

    Returns ``(fpr, tpr, thresholds)`` ordered by decreasing threshold; the
    first point is ``(0, 0)`` at ``thr = +inf`` (accept nothing) and the last
    is ``(1, 1)`` at the lowest score.  Tied scores move together, so a tie
    between classes gives a diagonal step, not an optimistic corner.
    """
    s = _as_scores(scores)
    labels = _as_labels(issame, s.shape[0])
    if s.shape[0] == 0:
        raise ValueError("scores is empty; expected at least one pair of each class")
    _check_both_classes(labels)

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    l_sorted = labels[order]
    # last index of each run of equal scores
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(l_sorted)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    thr = np.r_[np.inf, s_sorted[last]]
    return fpr, tpr, thr


def _as_curve(fpr, tpr) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(fpr, dtype=np.float64)
    t = np.asarray(tpr, dtype=np.float64)
    if f.ndim != 1 or t.ndim != 1 or f.shape != t.shape:
        raise ValueError(
            f"length mismatch: fpr has shape {f.shape}, tpr has shape {t.shape}; "
            "expected two 1-D arrays of equal length"
        )
    if f.size == 0:
        raise ValueError("fpr/tpr are empty; expected at least one ROC point")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(t))):
        raise ValueError("fpr/tpr contain NaN/inf; expected rates in [0, 1]")
    if np.any(np.diff(f) < 0):
        raise ValueError("fpr must be non-decreasing (as returned by roc_curve)")
    return f, t


def tar_at_far(fpr, tpr, far: float, *, rule: str = "conservative") -> float:
    """TAR at a target FAR on an ROC from :func:`roc_curve`.

    ``"conservative"``: the largest TPR among points with ``FPR <= far`` -
    an operating point that really exists and never exceeds the FAR.  If no
    point qualifies (a curve not starting at FPR 0), 0.0: accepting nothing.
    ``"interpolated"``: linear interpolation, ``np.interp(far, fpr, tpr)``
    semantics; at an FPR shared by several points (vertical step) the top
    one is used, explicitly rather than by np.interp's search order.
    """
    f, t = _as_curve(fpr, tpr)
    far = float(far)
    if not (0.0 <= far <= 1.0):
        raise ValueError(f"far must be within [0, 1], got {far}")
    if rule == "conservative":
        ok = f <= far
        return float(np.max(t[ok])) if np.any(ok) else 0.0
    if rule == "interpolated":
        j = int(np.searchsorted(f, far, side="right")) - 1  # last point with FPR <= far
        if j < 0:
            return float(t[0])
        if j == f.size - 1 or f[j] == far:
            return float(t[j])
        w = (far - f[j]) / (f[j + 1] - f[j])
        return float(t[j] + w * (t[j + 1] - t[j]))
    raise ValueError(f"rule must be 'conservative' or 'interpolated', got {rule!r}")


def roc_auc(fpr, tpr) -> float:
    """Area under the ROC by the trapezoid rule (exact for :func:`roc_curve`)."""
    f, t = _as_curve(fpr, tpr)
    if f.size < 2:
        raise ValueError("need at least two ROC points to compute an area")
    return float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2.0))


def thin_curve(x, y, max_points: int = 400) -> tuple[list[float], list[float]]:
    """At most ``max_points`` points of a curve (both ends kept, evenly spaced by index) as plain lists, for
    storing in metrics.json and plotting; an exact ROC has one point per distinct score."""
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if xa.size > max_points:
        keep = np.unique(np.round(np.linspace(0, xa.size - 1, max_points)).astype(np.int64))
        xa, ya = xa[keep], ya[keep]
    return [round(float(v), 6) for v in xa], [round(float(v), 6) for v in ya]
