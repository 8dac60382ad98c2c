"""Retrieval metrics: the average precision of a ranked gallery per probe (mAP = its mean over probes).

:func:`average_precision` takes, for each probe, the 1-based positions of its relevant (mated) gallery items in the
probe's ranked gallery list, so that a protocol can compute those positions however it likes (streamed over a large
gallery, with its own tie rule) and hand over only a few integers per probe.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

__all__ = ["average_precision"]

APRule = Literal["trapezoid", "step"]


def average_precision(mate_positions: Sequence, *, rule: APRule = "trapezoid") -> np.ndarray:
    """Average precision (Q,) of each query from the 1-based ranks of its relevant items; ``.mean()`` is the mAP.

    ``mate_positions[q]`` holds the positions (1 = best) of all of query q's relevant items in its ranked list, in any
    order; they must be distinct integers >= 1, at least one per query. With the relevant items at sorted positions
    r_1 < ... < r_n:

    * ``trapezoid`` (the Market-1501 ``compute_AP`` that TinyFace's release evaluation uses): the precision-recall
      curve integrated with the trapezoid rule over the recall steps, AP = (1/n) sum_i (p_before_i + p_i) / 2 with
      p_i = i / r_i and p_before_i = (i - 1) / (r_i - 1) (the precision one position earlier; 1 when r_i = 1).
    * ``step``: the usual non-interpolated AP, (1/n) sum_i i / r_i.

    Both are 1.0 exactly when the relevant items occupy positions 1..n.
    """
    if rule not in ("trapezoid", "step"):
        raise ValueError(f"rule must be 'trapezoid' or 'step', got {rule!r}")
    out = np.empty(len(mate_positions), dtype=np.float64)
    for q, positions in enumerate(mate_positions):
        r = np.asarray(positions)
        if r.ndim != 1 or r.size == 0:
            raise ValueError(f"query {q}: expected a non-empty 1-D array of positions, got shape {r.shape}")
        if r.dtype.kind == "f":
            if not np.all(np.isfinite(r)) or np.any(r != np.round(r)):
                raise ValueError(f"query {q}: positions must be whole numbers >= 1")
        elif r.dtype.kind not in "iu":
            raise ValueError(f"query {q}: positions must be integers, got dtype {r.dtype}")
        r = np.sort(r.astype(np.int64))
        if r[0] < 1:
            raise ValueError(f"query {q}: positions are 1-based and must be >= 1, got {int(r[0])}")
        if np.any(np.diff(r) == 0):
            raise ValueError(f"query {q}: positions must be distinct (two items cannot share a place in a ranking)")
        i = np.arange(1, r.size + 1, dtype=np.float64)
        precision = i / r
        if rule == "step":
            out[q] = precision.mean()
        else:
            before = np.where(r > 1, (i - 1) / np.maximum(r - 1, 1), 1.0)
            out[q] = ((before + precision) / 2).mean()
    return out
