"""Identification metrics shared by every identification protocol (SCface rank-1, QMUL-SurvFace TPIR, ...).

Plain functions on arrays, numpy only:

* :func:`similarity_matrix` - cosine of L2-normalised probe and gallery embeddings, (P, G).
* :func:`rank_of_true` - the 1-based rank of each probe's true subject among the gallery subjects.
* :func:`cmc` - the cumulative match characteristic: the fraction of probes with rank <= k, k = 1..max_rank.
* :func:`rank_k_accuracy` - one point of the CMC (rank-1 accuracy for k = 1).

Conventions:

* **Subjects, not images, are ranked.** A gallery may hold several images of one subject; a subject's score is the
  best (largest) similarity of its images, and the rank is taken among the distinct gallery subjects. With one image
  per subject (SCface's frontal gallery) this is the ordinary rank among gallery images, and the CMC reaches 1.0 at
  rank = number of gallery subjects.
* **Ties are pessimistic by default**: an impostor subject with exactly the true subject's score is counted as
  ranked before it, so ``rank = 1 + #(impostors >= true score)``. ``ties="optimistic"`` counts only the strictly
  better impostors, ``rank = 1 + #(impostors > true score)``. Neither depends on the gallery order (an ``argmax``,
  as the founding study and Lai & Lam use, picks the first of the tied subjects, so its result depends on the file
  order); the two bound it. Ties are compared exactly, on the scores as given.
* **Every probe's subject must be in the gallery** (closed set); a protocol that wants to drop such probes does so
  before calling, and says how many it dropped.

Open-set (watch-list) identification, as QMUL-SurvFace reports it (``PROTOCOLS.md`` §4.3):

* :func:`subject_templates` - one L2-normalised template per gallery subject (mean of its normalised embeddings).
* :func:`open_set_scores` - each mated probe's mate score if the mate is within the top ``rank`` gallery subjects
  (else ``-inf``), and each unmated probe's best (top-1) gallery score.
* :func:`open_set_curve` - the TPIR(rank, t)-FPIR(t) curve over thresholds t taken from the unmated top-1 scores:
  ``FPIR(t)`` = fraction of unmated probes with top-1 score >= t, ``TPIR(t)`` = fraction of mated probes whose mate
  is within rank and scores >= t. ``thresholds="grid"`` is the challenge evaluation's 1,000-step grid
  ``min + k (max - min) / 1000``, k = 0..999, over the unmated top-1 scores, one point kept per distinct FPIR (its
  largest TPIR, i.e. the lowest grid threshold giving it); ``"exact"`` puts a threshold at every distinct unmated score
  plus one just above the largest (FPIR = 0).
* :func:`tpir_at_fpir` - read TPIR at a target FPIR: ``nearest`` (the challenge's: the point with the FPIR nearest
  the target) or ``conservative`` (largest TPIR with FPIR <= target).
* :func:`curve_auc` - trapezoidal area under TPIR over FPIR.
* :func:`open_set_identification` - all of it for one probe set.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["cmc", "curve_auc", "open_set_curve", "open_set_identification", "open_set_scores", "rank_k_accuracy",
           "rank_of_true", "similarity_matrix", "subject_templates", "tpir_at_fpir"]

Ties = Literal["pessimistic", "optimistic"]


def _as_embeddings(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (images x dim), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected at least one embedding")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr).all(axis=1)))
        raise ValueError(f"{name} has {bad} row(s) with NaN/inf; expected finite embeddings")
    norms = np.linalg.norm(arr, axis=1)
    if np.any(norms == 0):
        rows = np.flatnonzero(norms == 0)[:5].tolist()
        raise ValueError(f"{name} has zero-norm row(s) {rows}; a zero embedding has no direction to compare")
    return arr / norms[:, None]


def similarity_matrix(probe_embeddings, gallery_embeddings) -> np.ndarray:
    """Cosine similarity (P, G) of every probe with every gallery image; both sides are L2-normalised here."""
    p = _as_embeddings(probe_embeddings, "probe_embeddings")
    g = _as_embeddings(gallery_embeddings, "gallery_embeddings")
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"probe and gallery embeddings differ in dimension: {p.shape[1]} vs {g.shape[1]}")
    return p @ g.T


def _as_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per row/column), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf")
    if arr.dtype.kind not in "iufUSO":
        raise ValueError(f"{name} must hold integers or strings, got dtype {arr.dtype}")
    return arr


def rank_of_true(similarity, probe_labels, gallery_labels, *, ties: Ties = "pessimistic") -> np.ndarray:
    """1-based rank (P,) of each probe's true subject among the gallery subjects (larger similarity = better).

    ``similarity`` is (P, G); ``probe_labels`` (P,) and ``gallery_labels`` (G,) are subject ids (ints or strings).
    A subject with several gallery images scores its best image. See the module docstring for ``ties``.
    Raises ValueError for shape mismatches, non-finite scores, or a probe whose subject has no gallery image.
    """
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', got {ties!r}")
    sim = np.asarray(similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D (probes x gallery), got shape {sim.shape}")
    if sim.dtype.kind not in "iuf":
        raise ValueError(f"similarity must be numeric, got dtype {sim.dtype}")
    if not np.all(np.isfinite(sim)):
        bad = int(np.count_nonzero(~np.isfinite(sim)))
        raise ValueError(f"similarity contains {bad} NaN/inf value(s); expected finite scores")
    plab = _as_labels(probe_labels, "probe_labels")
    glab = _as_labels(gallery_labels, "gallery_labels")
    if sim.shape != (plab.size, glab.size):
        raise ValueError(f"similarity has shape {sim.shape} but there are {plab.size} probe labels and "
                         f"{glab.size} gallery labels; expected ({plab.size}, {glab.size})")
    if (plab.dtype.kind in "iuf") != (glab.dtype.kind in "iuf") and "O" not in (plab.dtype.kind, glab.dtype.kind):
        raise ValueError(f"probe_labels ({plab.dtype}) and gallery_labels ({glab.dtype}) are of different kinds; "
                         "use integers on both sides or strings on both sides")
    subjects, column_subject = np.unique(glab, return_inverse=True)
    column_subject = column_subject.reshape(-1)
    pos = np.searchsorted(subjects, plab)
    pos_clipped = np.minimum(pos, subjects.size - 1)
    missing = subjects[pos_clipped] != plab
    if np.any(missing):
        absent = np.unique(plab[missing])
        shown = ", ".join(repr(x.item() if hasattr(x, "item") else x) for x in absent[:5])
        more = f" and {absent.size - 5} more" if absent.size > 5 else ""
        raise ValueError(f"{int(missing.sum())} probe(s) belong to {absent.size} subject(s) with no gallery image "
                         f"({shown}{more}); closed-set identification needs every probe subject in the gallery")
    sim = sim.astype(np.float64, copy=False)
    if subjects.size == glab.size:  # one image per subject: reorder the columns into subject order
        per_subject = np.empty_like(sim)
        per_subject[:, column_subject] = sim
    else:  # several images per subject: a subject scores its best image
        per_subject_t = np.full((subjects.size, sim.shape[0]), -np.inf)
        np.maximum.at(per_subject_t, column_subject, sim.T)
        per_subject = per_subject_t.T
    true_score = per_subject[np.arange(sim.shape[0]), pos_clipped]
    better = np.count_nonzero(per_subject > true_score[:, None], axis=1)
    if ties == "optimistic":
        return (1 + better).astype(np.int64)
    equal = np.count_nonzero(per_subject == true_score[:, None], axis=1) - 1  # the true subject itself
    return (1 + better + equal).astype(np.int64)


def _as_ranks(ranks) -> np.ndarray:
    arr = np.asarray(ranks)
    if arr.ndim != 1:
        raise ValueError(f"ranks must be 1-D (one rank per probe), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("ranks is empty; there are no probes to score")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("ranks must be whole numbers >= 1 (1-based), got non-integer values")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise ValueError(f"ranks must be integers, got dtype {arr.dtype}")
    if np.any(arr < 1):
        raise ValueError(f"ranks are 1-based and must be >= 1, got minimum {int(arr.min())}")
    return arr.astype(np.int64, copy=False)


def _check_k(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    return int(k)


def cmc(ranks, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: ``rates[k-1]`` = fraction of probes with rank <= k, for k = 1..max_rank.

    Non-decreasing; it reaches 1.0 at the largest rank (at the latest at the number of gallery subjects).
    """
    r = _as_ranks(ranks)
    m = _check_k(max_rank, "max_rank")
    counts = np.bincount(np.minimum(r, m + 1), minlength=m + 2)[1 : m + 1]
    return np.cumsum(counts) / r.size


def rank_k_accuracy(ranks, k: int) -> float:
    """Fraction of probes whose true subject is among the top ``k`` (k = 1: rank-1 identification accuracy)."""
    r = _as_ranks(ranks)
    return float(np.count_nonzero(r <= _check_k(k, "k")) / r.size)


def closed_set(probe_embeddings, probe_labels, gallery_embeddings, gallery_labels, *, max_rank: int = 20,
               ties: Ties = "pessimistic") -> dict:
    """Everything an identification protocol reports for one probe set: {"rank1", "rank5", "cmc" (max_rank,),
    "ranks" (P,)} from embeddings (cosine of L2-normalised vectors)."""
    similarity = similarity_matrix(probe_embeddings, gallery_embeddings)
    ranks = rank_of_true(similarity, probe_labels, gallery_labels, ties=ties)
    rates = cmc(ranks, max_rank)
    return {"rank1": float(rates[0]), "rank5": rank_k_accuracy(ranks, 5), "cmc": rates, "ranks": ranks}


# ---------------------------------------------------------------------------------------------------------------------
# Open-set (watch-list) identification
# ---------------------------------------------------------------------------------------------------------------------

def subject_templates(embeddings, labels) -> tuple[np.ndarray, np.ndarray]:
    """(templates (S, D), subjects (S,)): per subject (sorted, as :func:`numpy.unique`), the mean of its L2-normalised
    embeddings, L2-normalised again. Raises ValueError if a mean is the zero vector (opposite embeddings)."""
    emb = _as_embeddings(embeddings, "embeddings")
    lab = _as_labels(labels, "labels")
    if lab.size != emb.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings but {lab.size} labels; expected one label per embedding")
    subjects, inverse = np.unique(lab, return_inverse=True)
    sums = np.zeros((subjects.size, emb.shape[1]))
    np.add.at(sums, inverse.reshape(-1), emb)
    means = sums / np.bincount(inverse.reshape(-1), minlength=subjects.size)[:, None]
    norms = np.linalg.norm(means, axis=1)
    if np.any(norms < 1e-12):
        bad = subjects[norms < 1e-12][:5].tolist()
        raise ValueError(f"subject(s) {bad}: the mean of their embeddings is the zero vector; no template direction")
    return means / norms[:, None], subjects


def _check_similarity(sim, name: str) -> np.ndarray:
    arr = np.asarray(sim)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (probes x gallery), got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has no probes; open-set identification needs mated and unmated probes")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf; expected finite scores")
    return arr.astype(np.float64, copy=False)


def open_set_scores(mated_similarity, mated_labels, gallery_labels, unmated_similarity, *, rank: int = 20,
                    ties: Ties = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """(mate_scores (P,), unmated_top1 (U,)) for open-set identification.

    ``mated_similarity`` (P, G) and ``unmated_similarity`` (U, G) score probes against the gallery columns, whose
    subjects are ``gallery_labels`` (G,) (one column per subject for templates; several columns of a subject score
    their best, as in :func:`rank_of_true`). A mated probe's mate score is its subject's score when the subject's rank
    (:func:`rank_of_true` with ``ties``) is <= ``rank``, else ``-inf`` (never identified). An unmated probe's score is
    its best gallery score.
    """
    k = _check_k(rank, "rank")
    sim = _check_similarity(mated_similarity, "mated_similarity")
    uns = _check_similarity(unmated_similarity, "unmated_similarity")
    if uns.shape[1] != sim.shape[1]:
        raise ValueError(f"mated_similarity has {sim.shape[1]} gallery columns but unmated_similarity has "
                         f"{uns.shape[1]}; both must score the same gallery")
    ranks = rank_of_true(sim, mated_labels, gallery_labels, ties=ties)
    plab, glab = np.asarray(mated_labels), np.asarray(gallery_labels)
    same = plab[:, None] == glab[None, :]
    mate = np.where(same, sim, -np.inf).max(axis=1)
    return np.where(ranks <= k, mate, -np.inf), uns.max(axis=1)


def open_set_curve(mate_scores, unmated_top1, *, thresholds: Literal["grid", "exact"] = "grid",
                   n_steps: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpir, tpir, threshold), ordered by FPIR ascending (thresholds descending), one point per distinct FPIR.

    ``FPIR(t) = mean(unmated_top1 >= t)``, ``TPIR(t) = mean(mate_scores >= t)`` (``-inf`` mate scores never count).
    See the module docstring for the two threshold sets.
    """
    m = np.asarray(mate_scores, np.float64).reshape(-1)
    u = np.asarray(unmated_top1, np.float64).reshape(-1)
    if m.size == 0 or u.size == 0:
        raise ValueError(f"need mated and unmated probes, got {m.size} mated and {u.size} unmated scores")
    if not np.all(np.isfinite(u)) or np.any(np.isnan(m)) or np.any(m == np.inf):
        raise ValueError("unmated scores must be finite and mate scores finite or -inf")
    lo, hi = float(u.min()), float(u.max())
    if thresholds == "grid":
        _check_k(n_steps, "n_steps")
        thr = lo + (hi - lo) * np.arange(n_steps, dtype=np.float64) / n_steps
        thr = np.unique(thr)[::-1]  # descending
    elif thresholds == "exact":
        thr = np.r_[np.nextafter(hi, np.inf), np.unique(u)[::-1]]
    else:
        raise ValueError(f"thresholds must be 'grid' or 'exact', got {thresholds!r}")
    us, ms = np.sort(u), np.sort(m)
    fpir = (u.size - np.searchsorted(us, thr, side="left")) / u.size
    tpir = (m.size - np.searchsorted(ms, thr, side="left")) / m.size
    # thresholds descending -> fpir, tpir non-decreasing; keep the last (lowest threshold, largest TPIR) per FPIR
    last = np.r_[fpir[1:] != fpir[:-1], True]
    return fpir[last], tpir[last], thr[last]


def tpir_at_fpir(fpir, tpir, target: float, *, rule: Literal["nearest", "conservative"] = "nearest") -> float:
    """TPIR read off a curve at FPIR ``target``: ``nearest`` = at the point whose FPIR is nearest the target (the
    largest TPIR among equally near points); ``conservative`` = the largest TPIR among points with FPIR <= target
    (0.0 if none)."""
    f = np.asarray(fpir, np.float64)
    t = np.asarray(tpir, np.float64)
    if f.shape != t.shape or f.ndim != 1 or f.size == 0:
        raise ValueError(f"fpir and tpir must be 1-D of equal, non-zero length, got {f.shape} and {t.shape}")
    if rule == "nearest":
        d = np.abs(f - target)
        return float(t[d == d.min()].max())
    if rule == "conservative":
        ok = f <= target
        return float(t[ok].max()) if ok.any() else 0.0
    raise ValueError(f"rule must be 'nearest' or 'conservative', got {rule!r}")


def curve_auc(x, y) -> float:
    """Trapezoidal area under y over x (x sorted ascending), e.g. TPIR over FPIR."""
    xa = np.asarray(x, np.float64)
    ya = np.asarray(y, np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    if xa.size < 2:
        return 0.0
    if np.any(np.diff(xa) < 0):
        raise ValueError("x must be sorted ascending")
    return float(np.sum(np.diff(xa) * (ya[1:] + ya[:-1]) / 2))


def open_set_identification(mated_similarity, mated_labels, gallery_labels, unmated_similarity, *,
                            rank: int = 20, fpirs: tuple[float, ...] = (0.3, 0.2, 0.1),
                            thresholds: Literal["grid", "exact"] = "grid",
                            rule: Literal["nearest", "conservative"] = "nearest",
                            ties: Ties = "pessimistic") -> dict:
    """Everything an open-set protocol reports: {"tpir@fpir=<f>" for f in fpirs, "auc_tpir_fpir",
    "realised_fpir@<f>" (the FPIR of the point read), "n_mated", "n_unmated", "fpir", "tpir", "threshold" (curve)}."""
    mate, top1 = open_set_scores(mated_similarity, mated_labels, gallery_labels, unmated_similarity, rank=rank,
                                 ties=ties)
    fpir, tpir, thr = open_set_curve(mate, top1, thresholds=thresholds)
    out: dict = {}
    for f in fpirs:
        out[f"tpir@fpir={f:g}"] = tpir_at_fpir(fpir, tpir, f, rule=rule)
    out["auc_tpir_fpir"] = curve_auc(fpir, tpir)
    for f in fpirs:
        if rule == "nearest":
            d = np.abs(fpir - f)
            out[f"realised_fpir@{f:g}"] = float(fpir[d == d.min()].max())
        else:
            ok = fpir <= f
            out[f"realised_fpir@{f:g}"] = float(fpir[ok].max()) if ok.any() else 0.0
    out.update(n_mated=int(mate.size), n_unmated=int(top1.size), fpir=fpir, tpir=tpir, threshold=thr)
    return out
