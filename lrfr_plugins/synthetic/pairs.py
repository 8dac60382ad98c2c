"""Verification pairs over synthetic images laid out identity-major (image index = identity * per_identity + k).

NumPy only, so ``import lrfr_plugins.synthetic`` stays torch-free; the built-in synthetic protocols draw with it.
"""

from __future__ import annotations

import numpy as np


def draw_pairs(num_identities: int, per_identity: int, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(num_pairs, 2) image indices and labels; each tenth of the list is half genuine, half impostor."""
    rng = np.random.default_rng(seed)
    n = num_pairs // 2
    ids = rng.integers(num_identities, size=n)
    a, b = (rng.permuted(np.tile(np.arange(per_identity), (n, 1)), axis=1)[:, :2]).T
    genuine = np.stack([ids * per_identity + a, ids * per_identity + b], 1)
    id1 = rng.integers(num_identities, size=n)
    id2 = (id1 + rng.integers(1, num_identities, size=n)) % num_identities
    impostor = np.stack([id1 * per_identity + rng.integers(per_identity, size=n),
                         id2 * per_identity + rng.integers(per_identity, size=n)], 1)
    pairs = np.empty((2 * n, 2), np.int64)
    pairs[0::2], pairs[1::2] = genuine, impostor
    issame = np.zeros(2 * n, bool)
    issame[0::2] = True
    return pairs, issame
