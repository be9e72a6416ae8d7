"""The K-means engine: vectorized NumPy, scikit-learn's interface, scikit-learn's answers.

Lloyd's algorithm exactly as scikit-learn runs it (same iterations, same stopping rule, same
empty-cluster rule), made fast in ways that do not change the answer:

- distances are one float32 matrix product per chunk of rows, with squared norms precomputed;
- Elkan-style bounds (an upper bound on each point's distance to its own centre, a lower bound
  on its distance to each other centre) prove most points cannot change cluster, so only the
  rest are looked at again; after the first iterations that is a small fraction of the data;
- centre sums are kept in float64 and updated only for the points that changed cluster;
- chunks of rows are processed on worker threads, one per core.

Labels are those of exact arithmetic: float32 decides the clear cases, near ties are decided
again in float64. Data is centred (and, for extreme magnitudes, scaled by a power of two) before
clustering, as scikit-learn centres it. Working memory: one float32 copy of X, K x N float32
bounds, O(N + K*D) more, and a few chunks of rows.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

THREADS = os.cpu_count() or 1  # blocks are processed in parallel, BLAS single-threaded
PARALLEL_MIN_VALUES = 2**23  # smaller data runs in one thread: handing blocks over costs more
CHUNK_ROWS = 4096  # rows per matrix product: large enough for BLAS, small enough for cache
DENSE_FRACTION = 0.4  # above this share of stale rows in a chunk, the whole chunk is recomputed
OFFSET_SAMPLE_ROWS = 4096  # rows averaged for the centring offset
BOUND_CHUNK = 65536  # points per step of the bound test: K x this many float32 of scratch
MAX_GROUPS = 32  # bound groups: each centre its own up to this K, then groups of neighbours
FEW_CENTERS = 32  # up to this K, the nearest two are found column by column
TIE_MARGIN = 2.0**-14  # relative gap below which float32 cannot be trusted to pick the nearest centre
TIE_BLOCK_VALUES = 2**21  # float64 values per step of the exact tie-break (16 MB)


class IterationInfo(NamedTuple):
    """What one Lloyd iteration did; handed to the `callback` of KMeans."""

    run: int  # which of the n_init restarts, from 0
    iteration: int  # from 1
    inertia: float  # of this iteration's assignment, against the centres it was made with
    n_changed: int  # points that changed cluster in this iteration
    center_shift: float  # squared centre movement summed over all centres


class KMeans:
    """K-means clustering (Lloyd), with scikit-learn's parameters, attributes and results.

    init: "k-means++" (greedy, 2 + ln K candidates per centre, as scikit-learn),
    "random" (K distinct images picked at random, the original project's way), or a K x D array
    used as given. Convergence as scikit-learn: no label changes, or the squared centre shift
    summed over all centres <= tol x the mean per-feature variance of X.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
        callback: Callable[[IterationInfo], Any] | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    # ------------------------------------------------------------------ public API

    def fit(self, X: np.ndarray) -> KMeans:
        """Cluster X (N x D, uint8 or float); learned state lands in the `*_` attributes."""
        X = _check_X(X)
        self._check_params(X)
        data = _Prepared(X)
        rng = np.random.default_rng(self.random_state)
        n_runs = 1 if _is_array(self.init) else self.n_init
        best = None
        with (
            ThreadPoolExecutor(THREADS) if data.parallel else contextlib.nullcontext() as pool,
            # Worker threads take blocks of rows in parallel: BLAS runs single-threaded in them.
            threadpool_limits(1, user_api="blas") if data.parallel else contextlib.nullcontext(),
        ):
            for run in range(n_runs):
                centers = self._initial_centers(data, rng, pool)
                tol_abs = data.tol_abs(self.tol)
                result = _lloyd(data, centers, self.max_iter, tol_abs, self._reporter(run), pool)
                if best is None or result.inertia < best.inertia:
                    best = result
        self.cluster_centers_ = data.restore_centers(best.centers)
        self.labels_ = best.labels
        self.inertia_ = best.inertia / data.scale**2
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.n_empty_reseeds_ = best.n_reseeds
        self.n_features_in_ = X.shape[1]
        return self

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        """Fit, then return the cluster of each point (0..K-1)."""
        return self.fit(X).labels_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The nearest centre (0..K-1) of each row of X."""
        return self._labels_and_inertia(X)[0]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Euclidean distances from each row of X to every centre (N x K, float64)."""
        X, data, centers = self._for_new_data(X)
        out = np.empty((X.shape[0], len(centers)), dtype=np.float64)
        cn2 = _sq_norms(centers)
        for rows in _chunks(X.shape[0]):
            out[rows] = _sq_distances(data.block(rows), data.xn2[rows], centers, cn2)
        np.sqrt(out, out=out)
        return out / data.scale

    def score(self, X: np.ndarray) -> float:
        """Minus the inertia of X against the fitted centres (higher is better), as scikit-learn."""
        return -float(self._labels_and_inertia(X)[1])

    # ------------------------------------------------------------------ internals

    def _check_params(self, X: np.ndarray) -> None:
        n_samples = X.shape[0]
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"n_clusters must be an integer, got {k!r}")
        if not 1 <= k <= n_samples:
            raise ValueError(f"n_clusters must be between 1 and the number of samples ({n_samples}), got {k}")
        for name, low in (("max_iter", 1), ("n_init", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.tol, (int, float, np.floating)) or not math.isfinite(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol!r}")
        if _is_array(self.init):
            init = np.asarray(self.init)
            if init.shape != (k, X.shape[1]):
                raise ValueError(f"init array must have shape ({k}, {X.shape[1]}), got {init.shape}")
            if not np.all(np.isfinite(init)):
                raise ValueError("init array contains NaN or infinity")
        elif self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}")

    def _initial_centers(
        self, data: _Prepared, rng: np.random.Generator, pool: ThreadPoolExecutor | None = None
    ) -> np.ndarray:
        if _is_array(self.init):
            return data.transform_centers(np.asarray(self.init, dtype=np.float64))
        if self.init == "random":
            return data.block(_distinct_rows(data.rows_for_keys, self.n_clusters, rng)).astype(np.float64)
        return _kmeans_plusplus(data, self.n_clusters, rng, pool)

    def _reporter(self, run: int) -> Callable[[IterationInfo], None] | None:
        if not self.verbose and self.callback is None:
            return None

        def report(info: IterationInfo) -> None:
            info = info._replace(run=run)
            if self.verbose:
                print(
                    f"run {run} iteration {info.iteration}: inertia {info.inertia:.6g}, "
                    f"{info.n_changed} changed, centre shift {info.center_shift:.3g}"
                )
            if self.callback is not None:
                self.callback(info)

        return report

    def _for_new_data(self, X: np.ndarray) -> tuple[np.ndarray, _Prepared, np.ndarray]:
        if not hasattr(self, "cluster_centers_"):
            raise ValueError("this KMeans is not fitted yet: call fit first")
        X = _check_X(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, the model was fitted with {self.cluster_centers_.shape[1]}"
            )
        # Centre new data on the centres' mean: any offset works, this one needs no extra state.
        centers = self.cluster_centers_
        data = _Prepared(X, offset=centers.mean(axis=0), scale=_power_of_two_scale(centers))
        return X, data, data.transform_centers(centers).astype(np.float32)

    def _labels_and_inertia(self, X: np.ndarray) -> tuple[np.ndarray, float]:
        X, data, centers = self._for_new_data(X)
        labels = np.empty(X.shape[0], dtype=np.int32)
        cn2 = _sq_norms(centers)
        inertia = 0.0
        for rows in _chunks(X.shape[0]):
            points = data.block(rows)
            labels[rows] = _nearest(points, data.xn2[rows], centers, centers, cn2)[0]
            inertia += float(_sq_distances_to_own(points, centers, labels[rows]).sum(dtype=np.float64))
        return labels, inertia / data.scale**2


# ---------------------------------------------------------------------- data preparation


def _is_array(init: object) -> bool:
    return not isinstance(init, str)


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (samples x features), got {X.ndim}-D")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if X.dtype.kind not in "uifb":
        raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
    if X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinity")
    return X


class _Prepared:
    """X as the engine works on it: float32, centred, scaled into float32's comfortable range.

    Large data of small whole numbers (uint8 pixels, any integer type of 1 or 2 bytes) stays as it
    is and each block is converted when it is read: that costs what reading a float32 copy costs,
    and saves the copy (4 bytes per pixel). Other input, and small data (where the conversions
    would cost more than the copy), is copied to float32 once.
    """

    def __init__(self, X: np.ndarray, offset: np.ndarray | None = None, scale: float | None = None):
        n = X.shape[0]
        self.scale = _power_of_two_scale(X) if scale is None else scale
        if offset is None:
            # Any offset gives the same clusters; one near the mean keeps float32 precise.
            # A strided sample of rows is near enough and costs no pass over X.
            sample = X[:: max(1, n // OFFSET_SAMPLE_ROWS)]
            offset = sample.sum(axis=0, dtype=np.float64) * self.scale / len(sample)
            if X.dtype.kind in "uib":
                offset = np.round(offset)
        else:
            offset = np.asarray(offset, dtype=np.float64) * self.scale
        self.offset = offset.astype(np.float32)
        # Whole numbers stay whole after a whole offset: float32 sums of a chunk are then exact.
        self.whole = X.dtype.kind in "uib" and bool(np.all(self.offset == np.round(self.offset)))
        self.shape = X.shape
        compact = self.whole and X.dtype.itemsize <= 2 and X.size >= PARALLEL_MIN_VALUES
        self.raw = X if compact else None
        self.x = None if compact else np.empty(X.shape, dtype=np.float32)
        self.rows_for_keys = X if compact else self.x  # what distinct-image checks compare
        self.xn2 = np.empty(n, dtype=np.float64)
        self.column_sums: list[np.ndarray] = []
        self.parallel = THREADS > 1 and X.size >= PARALLEL_MIN_VALUES  # worth worker threads
        if self.parallel:
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(lambda rows: self._fill(X, rows), _chunks(n)))
        else:
            for rows in _chunks(n):
                self._fill(X, rows)

    def block(self, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of X as float32, scaled and centred (a new array, or a view of the float32 copy)."""
        if self.x is not None:
            return self.x[rows]
        values = self.raw[rows].astype(np.float32)
        values -= self.offset
        return values

    def _fill(self, X: np.ndarray, rows: slice) -> None:
        """Rows of the float32 copy (when there is one), their squared norms and column sums."""
        if self.x is None:
            chunk = self.block(rows)
        else:
            chunk = self.x[rows]
            np.subtract(X[rows] if self.scale == 1 else X[rows] * self.scale, self.offset, out=chunk)
        self.column_sums.append(np.ones(len(chunk), dtype=np.float32) @ chunk)
        norms = _sq_norms(chunk)
        # Inertia is computed from these norms (see _State.energy), so they must be exact:
        # float32 is, for whole numbers below 2^24; other rows are redone in float64.
        inexact = np.flatnonzero(norms >= 2.0**24) if self.whole else np.arange(len(norms))
        if len(inexact):
            redo = chunk[inexact].astype(np.float64)
            norms = norms.astype(np.float64)
            norms[inexact] = np.einsum("ij,ij->i", redo, redo)
        self.xn2[rows] = norms

    def tol_abs(self, tol: float) -> float:
        """scikit-learn's tolerance: tol x the mean over features of the variance of X."""
        if tol == 0:
            return 0.0
        n, d = self.shape
        column_means = np.sum(self.column_sums, axis=0, dtype=np.float64) / n  # var = E[x^2] - E[x]^2
        return tol * (self.xn2.sum() / n - float(column_means @ column_means)) / d

    def sq_distances(self, points: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
        """Squared distances from every row of X to each of `points` (N x len(points), float32)."""
        norms = _sq_norms(points)
        work = lambda rows: _sq_distances(self.block(rows), self.xn2[rows], points, norms)  # noqa: E731
        return np.concatenate(list(_in_parallel(pool, work, _chunks(self.shape[0]))))

    def transform_centers(self, centers: np.ndarray) -> np.ndarray:
        return centers * self.scale - self.offset

    def restore_centers(self, centers: np.ndarray) -> np.ndarray:
        return (centers + self.offset) / self.scale


def _power_of_two_scale(X: np.ndarray) -> float:
    """1, or an exact power of two that brings huge or tiny float data near 1 (no overflow in x.x)."""
    if X.dtype.kind != "f":
        return 1.0
    largest = float(np.max(np.abs(X)))
    if largest == 0 or 2.0**-40 <= largest <= 2.0**40:
        return 1.0
    return 2.0 ** -math.ceil(math.log2(largest))


def _chunks(n: int, size: int = CHUNK_ROWS):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _sq_norms(a: np.ndarray) -> np.ndarray:
    """Squared row norms, accumulated in the array's own precision (float32: fast, ~1e-7)."""
    return np.einsum("ij,ij->i", a, a)


def _relative_sq_distances(x: np.ndarray, centers: np.ndarray, cn2: np.ndarray) -> np.ndarray:
    """|c|^2 - 2 x.c (rows x K, float32, one matrix product): the squared distance less |x|^2.

    Nearest centres are found on this, as scikit-learn does: adding |x|^2 first would round it.
    """
    d2 = x @ centers.astype(np.float32, copy=False).T
    d2 *= -2.0
    d2 += cn2[None, :]
    return d2


def _nearest(x: np.ndarray, xn2: np.ndarray, centers: np.ndarray, centers32: np.ndarray, cn2: np.ndarray):
    """Nearest centre of each row, and |c|^2 - 2 x.c for every centre (rows x K, float32).

    float32 products decide all but near ties; a tie closer than float32 can tell (relative
    margin under TIE_MARGIN) is decided again in float64 from direct differences, so labels are
    those of exact arithmetic whatever the rounding.
    """
    d2 = _relative_sq_distances(x, centers32, cn2)
    labels, best, second = _two_smallest(d2)
    if d2.shape[1] > 1:
        close = np.flatnonzero(second - best <= TIE_MARGIN * (xn2 + cn2.max()))
        centers64 = np.asarray(centers, dtype=np.float64)
        step = max(1, TIE_BLOCK_VALUES // centers64.size)  # ties can be many (duplicate images)
        for part in _chunks(len(close), step):
            rows = close[part]
            exact = x[rows].astype(np.float64)[:, None, :] - centers64[None]
            labels[rows] = np.einsum("ikd,ikd->ik", exact, exact).argmin(axis=1)
    return labels, d2


def _two_smallest(d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the column of the smallest value (first on ties), that value, and the next one."""
    rows, k = d.shape
    if k > FEW_CENTERS:
        labels = d.argmin(axis=1).astype(np.int32)
        best = d[np.arange(rows), labels]
        d[np.arange(rows), labels] = np.inf
        second = d.min(axis=1)
        d[np.arange(rows), labels] = best
        return labels, best, second
    # Few columns: numpy reduces short rows slowly, so walk the columns instead.
    labels = np.zeros(rows, dtype=np.int32)
    best = d[:, 0].copy()
    second = np.full(rows, np.inf, dtype=d.dtype)
    scratch = np.empty_like(best)
    for j in range(1, k):
        column = d[:, j]
        labels[column < best] = j
        np.maximum(best, column, out=scratch)
        np.minimum(second, scratch, out=second)
        np.minimum(best, column, out=best)
    return labels, best, second


def _sq_distances(x: np.ndarray, xn2: np.ndarray, centers: np.ndarray, cn2: np.ndarray) -> np.ndarray:
    """Squared distances (rows x K, float32): |x|^2 - 2 x.c + |c|^2, never negative."""
    d2 = _relative_sq_distances(x, centers, cn2)
    d2 += xn2[:, None]
    return np.maximum(d2, 0.0, out=d2)


def _sq_distances_to_own(x: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance of each row to its own centre, from direct differences (0 when equal)."""
    return _sq_norms(x - centers.astype(np.float32)[labels])


# ---------------------------------------------------------------------- initialisation


def _distinct_rows(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
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


def _kmeans_plusplus(
    data: _Prepared, k: int, rng: np.random.Generator, pool: ThreadPoolExecutor | None
) -> np.ndarray:
    """Greedy k-means++: each new centre is the best of 2 + ln K candidates drawn by D^2."""
    n, d = data.shape
    n_trials = 2 + int(math.log(k))
    centers = np.empty((k, d), dtype=np.float64)
    first = data.block(rng.integers(n, size=1))
    centers[0] = first[0]
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
    return centers


# ---------------------------------------------------------------------- Lloyd with bounds


class _Result(NamedTuple):
    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_reseeds: int


class _State:
    """Labels, distance bounds and the per-cluster sums that make each iteration incremental.

    Bounds as Elkan's, over groups of centres as Yinyang's: `upper[i]` >= the distance of point i
    to its own centre, `lower[g, i]` <= its distance to every other centre of group g (G x N, so
    the per-point minimum runs over contiguous rows). Up to MAX_GROUPS centres each centre is its
    own group (Elkan); beyond, groups of neighbouring indices keep the bookkeeping at G x N.
    When centres move by `shift`, upper grows by its centre's shift and lower[g] shrinks by the
    largest shift in g; a point needs a look only if some group g could hold a nearer centre:
    upper > max(lower[g], half the smallest distance between its centre and one of g's).
    """

    # Bounds carry float32 rounding: widen them by more than it, so no skip is ever wrong.
    SLACK_UP = 1 + 2.0**-16
    SLACK_DOWN = np.float32(1 - 2.0**-16)

    def __init__(self, data: _Prepared, k: int, pool: ThreadPoolExecutor | None):
        n, d = data.shape
        self.data, self.pool = data, pool
        self.labels = np.full(n, -1, dtype=np.int32)
        self.upper = np.empty(n, dtype=np.float64)
        groups = min(k, MAX_GROUPS)
        self.group_starts = (np.arange(groups) * k) // groups  # first centre of each group
        self.lower = np.empty((groups, n), dtype=np.float32)
        self.scratch = np.empty(n, dtype=np.float64)
        self.sums = np.zeros((k, d), dtype=np.float64)
        self.counts = np.zeros(k, dtype=np.int64)

    def assign(self, centers: np.ndarray, stale: np.ndarray | None = None) -> int:
        """Reassign the stale points (all when None) to their nearest centre; return how many moved.

        Blocks are independent, so worker threads take them (numpy and BLAS release the GIL);
        only the shared sums are updated here, block by block, in order.
        """
        c32 = centers.astype(np.float32)
        cn2 = _sq_norms(c32)
        moved = 0
        blocks = _blocks(self.data.shape[0], stale)
        work = lambda block: self._reassign(block, centers, c32, cn2)  # noqa: E731
        for points, old, new in _in_parallel(self.pool, work, blocks):
            moved += len(new)
            self._move(points, old, new)
        return moved

    def _reassign(self, block, centers: np.ndarray, c32: np.ndarray, cn2: np.ndarray):
        """One block: new labels and bounds; the points that changed cluster, from and to."""
        points = self.data.block(block)
        xn2 = self.data.xn2[block]
        new, dist = _nearest(points, xn2, centers, c32, cn2)
        dist += xn2[:, None]
        np.maximum(dist, 0.0, out=dist)
        np.sqrt(dist, out=dist)
        old = self.labels[block].copy()
        self.labels[block] = new
        rows = np.arange(len(new))
        self.upper[block] = dist[rows, new] * self.SLACK_UP
        dist[rows, new] = np.inf  # lower bounds are on the other centres
        if len(self.group_starts) < dist.shape[1]:
            dist = np.minimum.reduceat(dist, self.group_starts, axis=1)
        dist *= self.SLACK_DOWN
        self.lower[:, block] = dist.T
        changed = np.flatnonzero(new != old)
        if len(changed) == len(new):  # first pass: no copy of the rows
            return points, old, new
        return points[changed], old[changed], new[changed]

    def _move(self, points: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
        """Move points between clusters' float64 sums (old = -1: not yet in any cluster)."""
        k = len(self.counts)
        dtype = np.float32 if self.data.whole else np.float64  # float32 is exact on whole numbers
        weights = np.zeros((k, len(points)), dtype=dtype)
        columns = np.arange(len(points))
        weights[new, columns] = 1.0
        left = old >= 0
        weights[old[left], columns[left]] -= 1.0
        self.sums += weights @ points.astype(dtype, copy=False)
        self.counts += np.bincount(new, minlength=k)
        self.counts -= np.bincount(old[left], minlength=k)

    def stale_rows(self, shift: np.ndarray, centers: np.ndarray) -> np.ndarray:
        """Move the bounds by the centres' shift; return the points whose cluster may change."""
        np.take(shift, self.labels, out=self.scratch)
        self.upper += self.scratch
        group_shift = np.maximum.reduceat(shift, self.group_starts)
        self.lower -= (group_shift * self.SLACK_UP).astype(np.float32)[:, None]
        # half_gaps[g, a]: half the distance from centre a to the nearest other centre in group g
        half_gaps = np.minimum.reduceat(_half_gaps(centers), self.group_starts, axis=0).astype(np.float32)
        stale = []
        for part in _chunks(len(self.labels), BOUND_CHUNK):
            # nearest_other[i] = min over g of max(lower[g, i], half_gaps[g, label_i])
            bound = np.take(half_gaps, self.labels[part], axis=1)
            np.maximum(bound, self.lower[:, part], out=bound)
            nearest_other = np.minimum.reduce(bound, axis=0)
            stale.append(np.flatnonzero(self.upper[part] > nearest_other) + part.start)
        return np.concatenate(stale)

    def energy(self, centers: np.ndarray) -> float:
        """Inertia of the current labels against `centers`, from the sums alone (no pass over X).

        Per cluster: sum |x|^2 - 2 c.sum x + n |c|^2. The sums are exact for whole-number pixels,
        so a cluster of identical images gets exactly 0.
        """
        k = len(centers)
        own = np.bincount(self.labels, weights=self.data.xn2, minlength=k)
        per_cluster = own - 2 * np.einsum("kd,kd->k", centers, self.sums) + self.counts * _sq_norms(centers)
        return float(np.maximum(per_cluster, 0.0).sum())


def _half_gaps(centers: np.ndarray) -> np.ndarray:
    """Half the distance between every two centres (K x K), inf on the diagonal."""
    cn2 = _sq_norms(centers)
    d2 = cn2[:, None] + cn2[None, :] - 2 * centers @ centers.T
    half = 0.5 * np.sqrt(np.maximum(d2, 0.0))
    np.fill_diagonal(half, np.inf)
    return half


def _update_centers(state: _State, centers: np.ndarray) -> tuple[np.ndarray, int]:
    """Means of the clusters; an empty cluster is re-seeded with the point farthest from its centre."""
    sums, counts = state.sums.copy(), state.counts.copy()
    empty = np.flatnonzero(counts == 0)
    reseeded = 0
    if len(empty):
        data, labels = state.data, state.labels
        far = np.empty(data.shape[0], dtype=np.float64)
        for rows in _chunks(data.shape[0]):
            far[rows] = _sq_distances_to_own(data.block(rows), centers, labels[rows])
        if far.max() > 0:  # all points on their centres (K > distinct points): nothing to gain
            farthest = np.argsort(-far, kind="stable")[: len(empty)]
            for cluster, point, values in zip(empty, farthest, data.block(farthest), strict=True):
                donor = labels[point]
                sums[donor] -= values
                counts[donor] -= 1
                sums[cluster] = values
                counts[cluster] = 1
                reseeded += 1
    new = centers.copy()  # a cluster still empty keeps its centre
    filled = counts > 0
    new[filled] = sums[filled] / counts[filled, None]
    return new, reseeded


def _blocks(n: int, stale: np.ndarray | None):
    """Row blocks to revisit: whole chunks where stale points are dense (a contiguous product
    beats gathering them), the remaining stale rows gathered into blocks of CHUNK_ROWS."""
    if stale is None:
        yield from _chunks(n)
        return
    edges = np.searchsorted(stale, np.arange(0, n + CHUNK_ROWS, CHUNK_ROWS))
    dense = np.flatnonzero(np.diff(edges) > DENSE_FRACTION * CHUNK_ROWS)
    for chunk in dense:
        yield slice(chunk * CHUNK_ROWS, min((chunk + 1) * CHUNK_ROWS, n))
    if len(dense):
        stale = stale[np.isin(stale // CHUNK_ROWS, dense, invert=True)]
    for part in _chunks(len(stale)):
        yield stale[part]


def _in_parallel(pool: ThreadPoolExecutor | None, work, items):
    """work(item) for each item on the pool's threads (or here, without a pool), results in order,
    at most two per thread in flight (bounded memory)."""
    if pool is None:
        yield from map(work, items)
        return
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) >= 2 * THREADS:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _lloyd(
    data: _Prepared,
    centers: np.ndarray,
    max_iter: int,
    tol_abs: float,
    report,
    pool: ThreadPoolExecutor | None,
) -> _Result:
    state = _State(data, len(centers), pool)
    centers = centers.copy()
    strict = converged = False
    reseeds = 0
    shift = np.zeros(len(centers))
    for i in range(max_iter):
        n_changed = state.assign(centers, None if i == 0 else state.stale_rows(shift, centers))
        inertia = state.energy(centers) if report else 0.0
        new_centers, reseeded = _update_centers(state, centers)
        reseeds += reseeded
        shift = np.sqrt(_sq_norms(new_centers - centers))
        centers = new_centers
        shift_total = float(shift @ shift)
        if report:
            report(IterationInfo(0, i + 1, inertia, n_changed, shift_total))
        if i > 0 and n_changed == 0:
            strict = converged = True
            break
        if shift_total <= tol_abs:
            converged = True
            break
    if not strict:
        # Labels must match the final centres (as scikit-learn's last E-step).
        state.assign(centers, state.stale_rows(shift, centers))
    return _Result(centers, state.labels, state.energy(centers), i + 1, converged, reseeds)
