"""The K-means engine: pure NumPy (no scikit-learn), scikit-learn's answers, faster.

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
clustering, as scikit-learn centres it. Working memory: one float32 copy of X (none for large
uint8 data), min(K, 32) x N float32 bounds, O(N + K*D) more, and a few chunks of rows.

The pieces, top to bottom: `fit` (restarts, best run) -> `Prepared` (X as the engine reads it;
prepared.py, with the exact distances) -> `seeding` (initial centres) -> `lloyd` (iterations)
over a `BlockState` (labels, bounds and cluster sums of a block of rows; here one block holds
all rows, the Dask engine one per worker) fed with `Centers` (what every block needs
of the centres in one iteration; both in bounds.py). `labels_inertia` and `distances` serve
new data against fitted centres. This module also estimates a fit's memory and time before any
work, and checks the parameters.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from . import bounds, params, prepared, seeding
from .bounds import BlockState, Centers, update_centers
from .prepared import (
    CHUNK_ROWS,
    Prepared,
    chunks,
    largest_magnitude,
    nearest,
    power_of_two_scale,
    sq_distances_to_own,
    sq_norms,
    unscaled_sum_of_squares,
)

INITS = ("k-means++", "k-means||", "random")  # the named starts
MAGNITUDE_SPAN = 100  # new data and centres may span 2^100 in magnitude (float32 squares reach 2^-126)


class IterationInfo(NamedTuple):
    """What one Lloyd iteration did; handed to the `callback` of `fit` (and of KMeans)."""

    run: int  # which of the n_init restarts, from 0
    iteration: int  # from 1
    inertia: float  # of this iteration's assignment, against the centres it was made with
    n_changed: int  # points that changed cluster in this iteration
    center_shift: float  # squared centre movement summed over all centres
    centers: np.ndarray | None = None  # K x D float64 after the update, in the data's own space
    seconds: float = 0.0  # wall time of this iteration (assignment and update)


class InitProgress(NamedTuple):
    """How far the initialisation of one restart is; handed to the `progress` of `fit`."""

    run: int  # which of the n_init restarts, from 0
    n_chosen: int  # centres chosen so far
    n_clusters: int  # of K


@dataclass
class FitResult:
    """The best run of a fit, under the attribute names of scikit-learn's KMeans."""

    cluster_centers_: np.ndarray  # K x D float64, in the data's own space
    labels_: np.ndarray  # N int32, 0..K-1
    inertia_: float  # sum of squared distances to the own centre
    n_iter_: int
    converged_: bool  # False when the run stopped at max_iter
    n_empty_reseeds_: int  # clusters that emptied and were re-seeded with the farthest point
    n_features_in_: int


# ---------------------------------------------------------------------- the fit


def fit(
    X: np.ndarray,
    n_clusters: int,
    *,
    init: str | np.ndarray | Callable = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | np.random.Generator | None = None,
    sample_weight: np.ndarray | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    progress: Callable[[InitProgress], Any] | None = None,
    verbose: bool = False,
) -> FitResult:
    """Cluster X (N x D, uint8 or any numbers) into n_clusters; the run of lowest inertia wins.

    init: "k-means++" (greedy, 2 + ln K candidates per centre, as scikit-learn), "k-means||"
    (Bahmani et al.: 5 rounds drawing about 2K candidates each, reduced by weighted k-means++;
    6 passes over X instead of K), "random" (K
    distinct rows picked at random, the original project's way), a K x D array used as given
    (then one run), or a callable `init(X, n_clusters, random_state=RandomState)` returning one.
    Convergence as scikit-learn: no label changes, or the squared centre shift summed over all
    centres <= tol x the mean per-feature variance of X. `sample_weight` (N, >= 0) weighs each
    point as scikit-learn does: in the means, the inertia and the k-means++ draws. `callback`
    gets an IterationInfo after every iteration, `progress` an InitProgress as initial centres
    are chosen.
    """
    X = check_X(X)
    check_params(X, n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol)
    weights = check_sample_weight(sample_weight, X.shape[0])
    data = Prepared(X, weights=weights, column_sums=weights is not None)  # else from the sums (see lloyd)
    rng = np.random.default_rng(random_state)
    n_runs = 1 if is_array(init) else n_init
    if callable(init):
        init = _called_init(init, X, n_clusters, rng)
    best = None
    with (
        ThreadPoolExecutor(prepared.THREADS) if data.parallel else contextlib.nullcontext() as pool,
        # Worker threads take blocks of rows in parallel: BLAS runs single-threaded in them.
        threadpool_limits(1, user_api="blas") if data.parallel else contextlib.nullcontext(),
    ):
        for run in range(n_runs):
            chosen = (
                None if progress is None else lambda n, run=run: progress(InitProgress(run, n, n_clusters))
            )
            start = init() if callable(init) else init
            centers = initial_centers(data, start, n_clusters, rng, pool, chosen)
            report = _reporter(run, data, callback, verbose)
            result = lloyd(data, centers, max_iter, tol, report, pool)
            if best is None or result.inertia < best.inertia:
                best = result
    return FitResult(
        cluster_centers_=data.restore_centers(best.centers),
        labels_=best.labels,
        inertia_=unscaled_sum_of_squares(best.inertia, data.scale),
        n_iter_=best.n_iter,
        converged_=best.converged,
        n_empty_reseeds_=best.n_reseeds,
        n_features_in_=X.shape[1],
    )


def _called_init(init: Callable, X: np.ndarray, k: int, rng: np.random.Generator) -> Callable[[], np.ndarray]:
    """scikit-learn's callable init, `init(X, k, random_state=RandomState)`, as a checked K x D array."""
    legacy = np.random.RandomState(int(rng.integers(2**32)))  # one stream for all restarts, as scikit-learn

    def start() -> np.ndarray:
        centers = init(X, k, random_state=legacy)
        check_init_array(centers, k, X.shape[1], what="the centres returned by the init callable")
        return np.asarray(centers, dtype=np.float64)

    return start


def _reporter(run: int, data: Prepared, callback, verbose: bool):
    """The per-iteration report of one run: IterationInfo to the callback, a line when verbose."""
    if not verbose and callback is None:
        return None

    def report(info: IterationInfo) -> None:
        info = info._replace(run=run, centers=data.restore_centers(info.centers))
        if verbose:
            print(
                f"run {run} iteration {info.iteration}: inertia {info.inertia:.6g}, "
                f"{info.n_changed} changed, centre shift {info.center_shift:.3g}"
            )
        if callback is not None:
            callback(info)

    return report


def initial_centers(
    data: Prepared,
    init: str | np.ndarray,
    k: int,
    rng: np.random.Generator,
    pool: ThreadPoolExecutor | None = None,
    chosen: Callable[[int], Any] | None = None,
) -> np.ndarray:
    """K x D float64 starting centres in the prepared space; chosen(n) as they are picked."""
    if is_array(init):
        centers = data.transform_centers(np.asarray(init, dtype=np.float64))
    elif init == "random":
        centers = seeding.random_rows(data, k, rng, data.weights)
    elif init == "k-means||":
        return seeding.kmeans_parallel(data, k, rng, pool, chosen, data.weights)
    else:
        return seeding.kmeans_plusplus(data, k, rng, pool, chosen, data.weights)
    if chosen is not None:
        chosen(k)
    return centers


# ---------------------------------------------------------------------- cost, before any work

FLOPS_PER_SECOND = 5e9  # per core, float32 matrix products on a laptop: a pessimistic round figure
FULL_PASSES = 10  # Lloyd's cost in passes over all points (the bounds skip most after the first few)
TYPICAL_ITERATIONS = 100  # for the per-iteration centre-to-centre distances


class Estimate(NamedTuple):
    """What a fit will cost, before it starts: rough, on the safe side."""

    bytes: int  # peak working memory beyond X itself
    seconds: float  # wall time, order of magnitude
    init_seconds: float  # of which the initialisations (k-means++), over all restarts


def estimate(
    n_samples: int,
    n_features: int,
    n_clusters: int,
    *,
    dtype: np.dtype | type = np.float64,
    init: str = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
) -> Estimate:
    """The memory and time a fit of this shape takes, from the sizes alone (no data needed).

    Memory is O(N x (min(K, 32) + 2 + ln K)) for the bounds and the k-means++ trials, O(K x D)
    for the centres and their sums, and blocks of rows whose size shrinks as K grows; plus a
    float32 copy of X unless X is large data of small whole numbers (read block by block, into a
    float32 buffer of up to CHUNK_ROWS x D per thread: what very wide images make large).
    """
    n, d, k = int(n_samples), int(n_features), int(n_clusters)
    dtype = np.dtype(dtype)
    compact = dtype.kind in "uib" and dtype.itemsize <= 2 and n * d >= prepared.PARALLEL_MIN_VALUES
    parallel = prepared.THREADS > 1 and n * d >= prepared.PARALLEL_MIN_VALUES
    groups = min(k, bounds.MAX_GROUPS)
    trials = 2 + int(math.log(k))
    rows = min(bounds.block_rows(k, n), n)
    in_flight = 2 * prepared.THREADS if parallel else 1
    memory = (
        (0 if compact else 4 * n * d)  # the float32 copy
        + n
        * (8 + 4 + 8 + 8 + 4 * groups + 16)  # norms, labels, upper bound, scratch, lower bounds, stale rows
        + n * (4 + 8 + 2 * 4 * trials)  # k-means++: closest, its running sum, the trials' distances
        + 6 * 8 * k * d  # centres, sums and their copies
        + 4 * groups * k
        + 3 * 8 * min(k * k, bounds.GAP_VALUES)  # centre-to-centre half gaps, in blocks
        + in_flight * rows * (3 * 4 * k + 2 * 4 * d + 8 * k)  # blocks: distances, rows, moves
        + in_flight * 2 * 8 * d  # a near tie's row and centre in float64 (a row at least, however wide)
        # compact rows are converted into a float32 buffer of each thread's, kept between blocks:
        # the blocks above count `rows` of it, a pass in blocks of CHUNK_ROWS may need more
        + (compact and (prepared.THREADS + 1) * max(0, min(prepared.CHUNK_ROWS, n) - rows) * 4 * d)
    )
    per_run_init = 2.0 * n * d * trials * k if init == "k-means++" else 0.0
    per_run = 2.0 * n * d * k * FULL_PASSES + 2.0 * k * k * d * min(max_iter, TYPICAL_ITERATIONS)
    rate = FLOPS_PER_SECOND * (prepared.THREADS if parallel else 1)
    init_seconds = n_init * per_run_init / rate
    return Estimate(int(memory), init_seconds + n_init * per_run / rate, init_seconds)


def largest_k(n_samples: int, n_features: int, memory: int, **settings) -> int:
    """The largest K (at most n_samples) whose estimated working memory fits in `memory` bytes; 0 if none."""
    low, high = 0, int(n_samples)
    while low < high:  # the estimate grows with K
        middle = (low + high + 1) // 2
        if estimate(n_samples, n_features, middle, **settings).bytes <= memory:
            low = middle
        else:
            high = middle - 1
    return low


# ---------------------------------------------------------------------- checks


def is_array(init: object) -> bool:
    """True for an init given as centres (anything but a name or a callable)."""
    return not isinstance(init, str) and not callable(init)


def check_X(X: np.ndarray) -> np.ndarray:
    """X as a 2-D array of numbers, finite, not empty; ValueError otherwise."""
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


def check_params(X: np.ndarray, k: int, *, init, n_init: int, max_iter: int, tol: float) -> None:
    """ValueError naming the first parameter that cannot be used with X."""
    n_samples = X.shape[0]
    params.check("n_clusters", k)
    if k > n_samples:
        raise ValueError(f"n_clusters must be between 1 and the number of samples ({n_samples}), got {k}")
    params.check("max_iter", max_iter)
    params.check("n_init", n_init)
    params.check("tol", tol)
    if is_array(init):
        check_init_array(init, k, X.shape[1])
    elif not callable(init) and init not in INITS:
        raise ValueError(
            f"init must be 'k-means++', 'k-means||', 'random', a ({k}, {X.shape[1]}) array or a callable, got {init!r}"
        )


def check_init_array(init, k: int, n_features: int, what: str = "init array") -> None:
    """ValueError unless init is a K x D array of finite real numbers."""
    values = np.asarray(init)
    if values.dtype.kind == "c":
        raise ValueError(f"{what} must hold real numbers, got complex values")
    if values.dtype.kind not in "uifb":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must hold numbers, got {values.dtype} values") from None
    if values.shape != (k, n_features):
        raise ValueError(f"{what} must have shape ({k}, {n_features}), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} contains NaN or infinity")


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """sample_weight as N float64 >= 0 with a positive sum; None when absent or all ones."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "uifb":
        raise ValueError(f"sample_weight must hold numbers, got {weights.dtype}")
    weights = weights.astype(np.float64)
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError("sample_weight must be finite, >= 0 and not all zero")
    return None if np.all(weights == 1) else weights


class _Run(NamedTuple):
    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_reseeds: int


def next_centers(current: Centers, new_centers: np.ndarray) -> tuple[Centers, float]:
    """The centres after an update, with each one's shift (the bounds move by it), and the
    squared shift summed over all centres (what the tolerance is compared with)."""
    shift = np.sqrt(sq_norms(new_centers - current.values))
    return Centers(new_centers, shift), float(shift @ shift)


def stopping(iteration: int, n_changed: int, shift_total: float, tol_abs: float) -> tuple[bool, bool]:
    """scikit-learn's rule after iteration `iteration` (from 0): (converged, strict). Strict: no
    point changed cluster, so the labels already belong to the final centres."""
    if iteration > 0 and n_changed == 0:
        return True, True
    return bool(shift_total <= tol_abs), False


def lloyd(
    data: Prepared,
    centers: np.ndarray,
    max_iter: int,
    tol: float,
    report: Callable[[IterationInfo], Any] | None,
    pool: ThreadPoolExecutor | None,
) -> _Run:
    """One run of Lloyd's algorithm from `centers` (prepared space) to convergence or max_iter
    (tol relative, as in fit)."""
    tol_abs = data.tol_abs(tol) if data.column_sums or tol == 0 else None
    state = BlockState(data, len(centers), pool)
    current = Centers(centers.copy())
    strict = converged = False
    reseeds = 0
    for i in range(max_iter):
        started = time.perf_counter()
        n_changed = state.assign(current, None if i == 0 else state.stale_rows(current))
        if tol_abs is None:  # no column sums made: an unweighted assignment's cluster sums add up to them
            tol_abs = data.tol_abs(tol, state.sums.sum(axis=0))
        inertia = state.energy(current.values) if report else 0.0
        new_centers, reseeded = update_centers(state, current.values)
        reseeds += reseeded
        current, shift_total = next_centers(current, new_centers)
        if report:
            seconds = time.perf_counter() - started
            report(IterationInfo(0, i + 1, inertia, n_changed, shift_total, new_centers, seconds))
        converged, strict = stopping(i, n_changed, shift_total, tol_abs)
        if converged:
            break
    if not strict:
        # Labels must match the final centres (as scikit-learn's last E-step).
        stale = state.stale_rows(current)
        state.skip_bounds = max(state.skip_bounds, 1)  # this pass's bounds would serve no one
        state.assign(current, stale)
    final = current.values
    return _Run(final, state.labels, state.energy(final), i + 1, converged, reseeds)


# ---------------------------------------------------------------------- new data, fitted centres


def _new_data_blocks(X: np.ndarray, centers: np.ndarray, scale: float | None = None):
    """Blocks of X prepared around the centres' mean (any offset works; this one needs no state):
    (rows, float32 prepared rows, their float64 squared norms), one block at a time, so that new
    data costs no float32 copy of X (4 bytes a value); and the centres in that space first.

    The scale is a power of two that brings both X and the centres near 1 (huge or tiny values);
    the rows are prepared as Prepared prepares them, so the labels are the fit's."""
    if scale is None:
        scale = power_of_two_scale(max(largest_magnitude(centers), largest_magnitude(X)))
    offset = (np.asarray(centers.mean(axis=0), dtype=np.float64) * scale).astype(np.float32)
    c32 = (centers * scale - offset).astype(np.float32)
    yield c32
    size = min(CHUNK_ROWS, bounds.block_rows(len(centers)))
    block = np.empty((min(X.shape[0], size), X.shape[1]), dtype=np.float32)
    for rows in chunks(X.shape[0], size):
        x = block[: rows.stop - rows.start]
        np.subtract(X[rows] if scale == 1 else X[rows] * scale, offset, out=x)
        yield rows, x, sq_norms(x.astype(np.float64))


def new_data_scale(X: np.ndarray, centers: np.ndarray) -> float:
    """The power of two at which new data meets fitted centres: both brought near 1.

    ValueError when a centre is more than 2^MAGNITUDE_SPAN below the largest value of the centres
    and X (say centres of 1e300 beside centres of 1): at one scale, float32 would round such a
    centre to 0 and tell it from others by chance; no fit on one dataset makes such centres.
    """
    per_center = np.abs(centers).max(axis=1)
    top = max(float(per_center.max()), largest_magnitude(X))
    small = per_center[(per_center > 0) & (per_center < top * 2.0**-MAGNITUDE_SPAN)]
    if len(small):
        raise ValueError(
            f"the centres and the data span magnitudes from {small.min():.3g} to {top:.3g}, more than "
            f"2^{MAGNITUDE_SPAN} apart: their distances cannot be computed at one scale (such centres "
            "do not come from fitting data like these)"
        )
    return power_of_two_scale(top)


def labels_inertia(
    X: np.ndarray, centers: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Nearest centre of each row of X (int32, exact as in the fit) and the (weighted) sum of
    squared distances to it. Block by block: memory beyond X is O(N) for the labels."""
    scale = new_data_scale(X, centers)
    blocks = _new_data_blocks(X, centers, scale)
    c32 = next(blocks)
    weights = check_sample_weight(sample_weight, X.shape[0])
    labels = np.empty(X.shape[0], dtype=np.int32)
    cn2 = sq_norms(c32)
    inertia = 0.0
    for rows, points, xn2 in blocks:
        labels[rows] = nearest(points, xn2, c32, c32, cn2)[0]
        d2 = sq_distances_to_own(points, c32, labels[rows])
        inertia += float(d2.sum(dtype=np.float64) if weights is None else weights[rows] @ d2)
    return labels, unscaled_sum_of_squares(inertia, scale)


def labels_distances(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each row of X (int32, as labels_inertia) and the Euclidean distance to
    it (float64, as distances_to_own: the numbers the fit writes for its own rows), in one pass
    over X, block by block."""
    scale = new_data_scale(X, centers)
    blocks = _new_data_blocks(X, centers, scale)
    c32 = next(blocks)
    cn2 = sq_norms(c32)
    labels = np.empty(X.shape[0], dtype=np.int32)
    out = np.empty(X.shape[0], dtype=np.float64)
    for rows, points, xn2 in blocks:
        labels[rows] = nearest(points, xn2, c32, c32, cn2)[0]
        out[rows] = _own_distances(X[rows], centers, labels[rows], scale)
    return labels, out


def distances_to_own(X: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of X to its own centre `labels` (N float64), block by block.

    float32 differences accumulated in float64: about 1e-7 relative, ample for the six digits
    the files show. The one routine for these numbers: a run's assignments.csv and `predict`
    on the same rows give the same text."""
    scale = power_of_two_scale(max(largest_magnitude(centers), largest_magnitude(X)))
    out = np.empty(X.shape[0], dtype=np.float64)
    for rows in chunks(X.shape[0]):
        out[rows] = _own_distances(X[rows], centers, labels[rows], scale)
    return out


def _own_distances(x: np.ndarray, centers: np.ndarray, labels: np.ndarray, scale: float) -> np.ndarray:
    """Rows of X (as stored) to their own centres, computed at `scale` (a power of two: exact)."""
    rows = x.astype(np.float32) if scale == 1 else (x * scale).astype(np.float32)
    own = centers if scale == 1 else centers * scale
    d2 = sq_distances_to_own(rows, own, labels, accumulate=np.float64)
    return np.sqrt(d2) / scale


def distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distances from each row of X to every centre (N x K, float64, computed in float64)."""
    scale = power_of_two_scale(max(largest_magnitude(centers), largest_magnitude(X)))
    offset = centers.mean(axis=0) * scale
    c = centers * scale - offset
    cn2 = sq_norms(c)
    out = np.empty((X.shape[0], len(c)), dtype=np.float64)
    for rows in chunks(X.shape[0], min(CHUNK_ROWS, bounds.block_rows(len(c)))):
        x = X[rows] * scale - offset if scale != 1 else X[rows] - offset
        d2 = x @ c.T
        d2 *= -2
        d2 += sq_norms(x)[:, None]
        d2 += cn2
        out[rows] = d2
    np.maximum(out, 0.0, out=out)
    np.sqrt(out, out=out)
    return out / scale
