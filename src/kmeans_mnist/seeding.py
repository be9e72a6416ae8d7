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


def random_rows(
    data: Prepared, k: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """K rows picked at random, distinct in content while the data has enough (the original project's way)."""
    return data.block(distinct_rows(data.rows_for_keys, k, rng, weights)).astype(np.float64)


def distinct_rows(
    x: np.ndarray, k: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """Indices of k rows picked at random, distinct in content while the data has enough.

    With weights, rows are drawn without replacement with probability proportional to their
    weight (as scikit-learn's random init), rows of weight 0 last.
    """
    if weights is None:
        order = rng.permutation(x.shape[0])
    else:
        # Efraimidis-Spirakis: sorting by log(u) / w is drawing without replacement by weight.
        with np.errstate(divide="ignore"):
            keys = np.log(rng.uniform(size=len(weights))) / weights
        keys[weights == 0] = -np.inf
        order = np.argsort(-keys, kind="stable")
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
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy k-means++: each new centre is the best of 2 + ln K candidates drawn by D^2.

    With weights, as scikit-learn: the first centre drawn by weight, candidates by w D^2, and
    the candidate kept is the one of least weighted potential sum(w D^2).
    """
    n, d = data.shape
    n_trials = 2 + int(math.log(k))
    centers = np.empty((k, d), dtype=np.float64)
    if weights is None:
        first = data.block(rng.integers(n, size=1))
        last = n - 1
    else:
        cumulative = np.cumsum(weights)
        last = int(np.flatnonzero(weights)[-1])  # draws never land on a row of weight 0
        drawn = np.searchsorted(cumulative, rng.uniform(size=1) * cumulative[-1], side="right")
        first = data.block(np.minimum(drawn, last))
    centers[0] = first[0]
    if chosen is not None:
        chosen(1)
    closest = data.sq_distances(first, pool)[:, 0]
    potential = closest.sum(dtype=np.float64) if weights is None else float(weights @ closest)
    for c in range(1, k):
        draws = rng.uniform(size=n_trials) * potential
        mass = closest if weights is None else weights * closest
        candidates = data.block(np.minimum(np.searchsorted(np.cumsum(mass, dtype=np.float64), draws), last))
        d2 = data.sq_distances(candidates, pool)  # N x trials
        np.minimum(d2, closest[:, None], out=d2)
        potentials = d2.sum(axis=0, dtype=np.float64) if weights is None else weights @ d2
        best = int(potentials.argmin())
        potential, closest = potentials[best], d2[:, best].copy()
        centers[c] = candidates[best]
        if chosen is not None:
            chosen(c + 1)
    return centers
