"""Bounded-memory embedding of large image lists: decode + resize + embed in batches, keep only the embeddings.

A protocol with a large gallery (TinyFace: 157,871 images; 3 x 112 x 112 uint8 each would be 5.9 GB decoded) hands
:func:`embed_batches` its item list, a ``load`` function (items -> uint8 (n, 3, 112, 112) batch) and the embedder:
at most ``batch_size`` decoded images exist at a time, and the embeddings go into one preallocated (N, D) array
(no list of chunks + concatenation, which would hold them twice), L2-normalised per batch if asked (row-wise, so the
same numbers as normalising the whole array at once). :func:`embedding_dtype` picks float32, or float16 when
N x D float32 would exceed a memory budget.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

#: default budget for a protocol's embeddings held in memory (float32 below it, float16 above)
DEFAULT_BUDGET_MB = 2048.0


def embedding_dtype(count: int, dim: int, budget_mb: float = DEFAULT_BUDGET_MB) -> np.dtype:
    """float32 if ``count`` x ``dim`` float32 embeddings fit ``budget_mb`` MiB, else float16 (half the bytes)."""
    return np.dtype(np.float32) if count * dim * 4 <= budget_mb * 2 ** 20 else np.dtype(np.float16)


def iter_batches(items: Sequence[Any], batch_size: int, load: Callable[[Sequence[Any]], Any], *,
                 desc: str | None = None, progress: bool = False) -> Iterator[tuple[int, Any]]:
    """``(start, load(items[start:start + batch_size]))`` in order, one batch alive at a time; a tqdm bar counting
    images (``desc``) on stderr when ``progress``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield start, load(chunk)
            bar.update(len(chunk))


def _call(embed: Callable[[torch.Tensor], Any], batch: torch.Tensor) -> np.ndarray:
    emb = np.asarray(embed(batch), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != batch.shape[0]:
        raise ValueError(f"the embedder returned shape {emb.shape} for {batch.shape[0]} images; expected (images, dim)")
    return emb


def normalise_rows(emb: np.ndarray, what: str) -> np.ndarray:
    """float32 rows divided by their L2 norms; ValueError on NaN/inf or a zero row."""
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"the embedder returned NaN/inf for {what}")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"the embedder returned a zero embedding for {what}; it has no direction to compare")
    return (emb / norms).astype(np.float32)


def embed_batches(items: Sequence[Any], load: Callable[[Sequence[Any]], torch.Tensor],
                  embed: Callable[[torch.Tensor], Any], *, batch_size: int, flip_sum: bool = False,
                  normalise: bool = False, budget_mb: float = DEFAULT_BUDGET_MB, dtype: Any = None,
                  desc: str | None = None, progress: bool = False, what: str = "images") -> np.ndarray:
    """(N, D) embeddings of ``items``, ``batch_size`` images decoded at a time.

    ``load`` turns a slice of ``items`` into a uint8 (n, 3, 112, 112) tensor; ``flip_sum`` adds the embedding of the
    mirrored batch (before normalising); ``normalise`` L2-normalises each row. The result's dtype is ``dtype`` if
    given, else :func:`embedding_dtype` (N, D, ``budget_mb``), decided when the first batch tells D. No items:
    a (0, 0) float32 array.
    """
    out: np.ndarray | None = None
    for start, batch in iter_batches(items, batch_size, load, desc=desc, progress=progress):
        emb = _call(embed, batch)
        if flip_sum:
            emb = emb + _call(embed, batch.flip(-1))
        if normalise:
            emb = normalise_rows(emb, what)
        if out is None:
            out = np.empty((len(items), emb.shape[1]),
                           dtype=np.dtype(dtype) if dtype is not None else embedding_dtype(len(items), emb.shape[1],
                                                                                           budget_mb))
        elif emb.shape[1] != out.shape[1]:
            raise ValueError(f"the embedder returned {emb.shape[1]}-d embeddings after {out.shape[1]}-d ones")
        out[start:start + emb.shape[0]] = emb
        del batch, emb
    return out if out is not None else np.zeros((0, 0), np.float32)
