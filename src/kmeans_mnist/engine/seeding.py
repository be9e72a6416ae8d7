"""Initial centres for the engine: K distinct random rows, greedy k-means++ as scikit-learn, or
k-means|| (Bahmani et al., 2012) for data where K passes over it are too many.

All work on the engine's prepared data (`engine.Prepared`: rows centred and scaled, read block
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
    from .lloyd import Prepared


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
    # One pass over the data per centre: the candidates' distances, their minimum with the
    # closest so far and the potentials are made block by block (Prepared.closest_to).
    closest = np.empty((1, n), dtype=np.float32)
    potential = data.closest_to(first.astype(np.float64), closest, pool, weights=weights)[0]
    closest = closest[0]
    trials = np.empty((n_trials, n), dtype=np.float32)
    for c in range(1, k):
        draws = rng.uniform(size=n_trials) * potential
        mass = closest if weights is None else weights * closest
        candidates = data.block(np.minimum(np.searchsorted(np.cumsum(mass, dtype=np.float64), draws), last))
        potentials = data.closest_to(candidates.astype(np.float64), trials, pool, closest, weights)
        best = int(potentials.argmin())
        potential = potentials[best]
        closest[:] = trials[best]
        centers[c] = candidates[best]
        if chosen is not None:
            chosen(c + 1)
    return centers


PARALLEL_ROUNDS = 5  # k-means|| rounds: Bahmani et al. found 5 enough in practice
OVERSAMPLING = 2.0  # k-means|| draws about OVERSAMPLING x K candidates per round


def kmeans_parallel(
    data: Prepared,
    k: int,
    rng: np.random.Generator,
    pool: ThreadPoolExecutor | None = None,
    chosen: Callable[[int], Any] | None = None,
    weights: np.ndarray | None = None,
    rounds: int = PARALLEL_ROUNDS,
    oversampling: float = OVERSAMPLING,
) -> np.ndarray:
    """k-means|| (Bahmani, Moseley, Vattani, Kumar, Vassilvitskii, 2012), reduced by weighted
    greedy k-means++.

    A first centre drawn by weight; then `rounds` rounds, each one pass over the data, in which
    every point joins the candidates independently with probability
    min(1, oversampling x K x w D^2 / sum(w D^2)) (D: distance to the nearest candidate so far);
    each candidate then weighs what the points nearest to it weigh, and greedy k-means++ on
    those ~1 + rounds x oversampling x K weighted candidates gives the K centres. rounds + 1
    passes in all, instead of k-means++'s K.
    """
    if rounds < 0 or isinstance(rounds, bool) or int(rounds) != rounds:
        raise ValueError(f"k-means|| rounds must be a whole number >= 0, got {rounds!r}")
    if not oversampling > 0:
        raise ValueError(f"k-means|| oversampling must be > 0, got {oversampling!r}")
    n = data.shape[0]
    if weights is None:
        first = rng.integers(n, size=1)
    else:
        cumulative = np.cumsum(weights)
        first = np.searchsorted(cumulative, rng.uniform(size=1) * cumulative[-1], side="right")
        first = np.minimum(first, int(np.flatnonzero(weights)[-1]))
    candidates = [data.block(first).astype(np.float64)]
    closest, nearest = data.nearest_of(candidates[0], pool)
    for _ in range(rounds):
        mass = closest.astype(np.float64) if weights is None else weights * closest
        potential = mass.sum()
        if potential == 0:  # every point is a candidate already
            break
        drawn = np.flatnonzero(rng.uniform(size=n) * potential < oversampling * k * mass)
        if not len(drawn):
            continue
        new = data.block(drawn).astype(np.float64)
        distances, index = data.nearest_of(new, pool)
        nearer = distances < closest
        closest[nearer] = distances[nearer]
        nearest[nearer] = index[nearer] + sum(len(c) for c in candidates)
        candidates.append(new)
    points = np.concatenate(candidates)
    mass = np.bincount(nearest, weights=weights, minlength=len(points)).astype(np.float64)
    centers = weighted_plusplus(points, mass, k, rng)
    if chosen is not None:
        chosen(k)
    return centers


def weighted_plusplus(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy k-means++ on a few weighted points (k-means||'s reduction), in float64.

    Fewer points of positive weight than K (data with few distinct rows): all of them, then
    repeats; the surplus clusters stay empty, as with any start on such data.
    """
    positive = np.flatnonzero(weights > 0)
    if len(positive) <= k:
        return points[positive[np.arange(k) % len(positive)]]
    points, weights = points[positive], weights[positive]
    n_trials = 2 + int(math.log(k))
    norms = np.einsum("ij,ij->i", points, points)

    def sq_distances(to: np.ndarray) -> np.ndarray:
        d2 = norms[:, None] - 2 * points @ to.T + np.einsum("ij,ij->i", to, to)[None, :]
        return np.maximum(d2, 0.0, out=d2)

    cumulative = np.cumsum(weights)
    index = [int(np.searchsorted(cumulative, rng.uniform() * cumulative[-1], side="right"))]
    closest = sq_distances(points[index])[:, 0]
    for _ in range(1, k):
        draws = rng.uniform(size=n_trials) * (weights @ closest)
        picks = np.minimum(np.searchsorted(np.cumsum(weights * closest), draws), len(points) - 1)
        trials = np.minimum(sq_distances(points[picks]), closest[:, None])
        best = int((weights @ trials).argmin())
        index.append(int(picks[best]))
        closest = trials[:, best]
    return points[index]
