"""Initial centres for the engine: K distinct random rows, or greedy k-means++ as scikit-learn.

Both work on the engine's prepared data (`engine.Prepared`: rows centred and scaled, read block
by block) and return K x D float64 centres in that space. `chosen(n)`, when given, is called as
centres are picked (n of K so far), so a caller can show the progress of a long initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .engine import Prepared


def random_rows(data: Prepared, k: int, rng: np.random.Generator) -> np.ndarray:
    """K rows picked at random, distinct in content while the data has enough (the original project's way)."""
    return data.block(distinct_rows(data.rows_for_keys, k, rng)).astype(np.float64)


def distinct_rows(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k rows picked at random, distinct in content while the data has enough."""
    order = rng.permutation(x.shape[0])
    chosen, seen = [], set()
    for index in order:
        key = x[index].tobytes()
        if key not in seen:
            seen.add(key)
            chosen.append(index)
            if len(chosen) == k:
                return np.array(chosen)
    # Fewer distinct rows than k: repeat some; the surplus clusters stay empty, never NaN.
    taken = set(chosen)
    extra = [i for i in order if i not in taken][: k - len(chosen)]
    return np.array(chosen + extra)


def kmeans_plusplus(
    data: Prepared,
    k: int,
    rng: np.random.Generator,
    pool: ThreadPoolExecutor | None = None,
    chosen: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """Greedy k-means++: each new centre is the best of 2 + ln K candidates drawn by D^2."""
    n, d = data.shape
    n_trials = 2 + int(math.log(k))
    centers = np.empty((k, d), dtype=np.float64)
    first = data.block(rng.integers(n, size=1))
    centers[0] = first[0]
    if chosen is not None:
        chosen(1)
    closest = data.sq_distances(first, pool)[:, 0]
    potential = closest.sum(dtype=np.float64)
    for c in range(1, k):
        draws = rng.uniform(size=n_trials) * potential
        candidates = data.block(
            np.minimum(np.searchsorted(np.cumsum(closest, dtype=np.float64), draws), n - 1)
        )
        d2 = data.sq_distances(candidates, pool)  # N x trials
        np.minimum(d2, closest[:, None], out=d2)
        potentials = d2.sum(axis=0, dtype=np.float64)
        best = int(potentials.argmin())
        potential, closest = potentials[best], d2[:, best].copy()
        centers[c] = candidates[best]
        if chosen is not None:
            chosen(c + 1)
    return centers
