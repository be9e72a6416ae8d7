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

The pieces, top to bottom: `fit` (restarts, best run) -> `Prepared` (X as the engine reads it)
-> `seeding` (initial centres) -> `lloyd` (iterations) over a `BlockState` (labels, bounds and
cluster sums of a block of rows; here one block holds all rows, a distributed engine keeps one
per chunk) fed with `Centers` (what every block needs of the centres in one iteration).
`labels_inertia` and `distances` serve new data against fitted centres.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from . import seeding

THREADS = os.cpu_count() or 1  # blocks are processed in parallel, BLAS single-threaded
PARALLEL_MIN_VALUES = 2**23  # smaller data runs in one thread: handing blocks over costs more
CHUNK_ROWS = 1024  # rows per block of the passes over X (the assignment's: see ASSIGN_ROWS)
FILL_ROWS = 512  # rows per step of Prepared's pass (norms, column sums): converted rows stay in cache
FILL_TASK_ROWS = 4096  # rows per task of that pass (fewer tasks: fewer hand-overs between threads)
DENSE_FRACTION = 0.7  # above this share of stale rows in a chunk, the whole chunk is recomputed
DENSE_FRACTION_MANY = 0.9  # beyond FEW_CENTERS centres: a row's product costs more than its gather
OFFSET_SAMPLE_ROWS = 4096  # rows averaged for the centring offset
BOUND_CHUNK = 65536  # points per step of the bound test: K x this many float32 of scratch
MAX_GROUPS = 32  # bound groups: each centre its own up to this K, then strided groups (group_sizes)
FEW_CENTERS = 32  # up to this K, the nearest two are found column by column
DENSE_MOVES = 32  # up to this K, cluster sums move by a dense one-hot product, beyond by a sparse one
INITS = ("k-means++", "k-means||", "random")  # the named starts
SHIFT_MAX = 8.0  # compact rows are multiplied as stored while |offset|^2 <= this x mean |x - offset|^2
TIE_MARGIN = 2.0**-14  # relative gap below which float32 cannot be trusted to pick the nearest centre
TIE_BLOCK_VALUES = 2**21  # float64 values per step of the exact tie-break (16 MB)
ASSIGN_ROWS = 4096  # rows per block of the assignment: fewer numpy calls per row, less time holding the GIL
WHOLE_MAX = 2.0**24 / (2 * ASSIGN_ROWS)  # whole numbers up to this sum exactly in float32 per block
BLOCK_VALUES = 2**22  # rows x K values per block of the assignment: fewer rows per block beyond K=1024
MIN_BLOCK_ROWS = 16
GAP_VALUES = 2**21  # values (float64) per step of the centre-to-centre distances: 16 MB
USELESS_STALE = 0.98  # a bound test that finds this share of the points stale saved nothing: then
SKIP_PASSES = 2  # this many passes keep no bounds (all points are looked at) before they are tried again


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
        ThreadPoolExecutor(THREADS) if data.parallel else contextlib.nullcontext() as pool,
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
        inertia_=best.inertia / data.scale**2,
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
    float32 copy of X unless X is large data of small whole numbers (read block by block).
    """
    n, d, k = int(n_samples), int(n_features), int(n_clusters)
    dtype = np.dtype(dtype)
    compact = dtype.kind in "uib" and dtype.itemsize <= 2 and n * d >= PARALLEL_MIN_VALUES
    parallel = THREADS > 1 and n * d >= PARALLEL_MIN_VALUES
    groups = min(k, MAX_GROUPS)
    trials = 2 + int(math.log(k))
    rows = min(block_rows(k, n), n)
    in_flight = 2 * THREADS if parallel else 1
    memory = (
        (0 if compact else 4 * n * d)  # the float32 copy
        + n
        * (8 + 4 + 8 + 8 + 4 * groups + 16)  # norms, labels, upper bound, scratch, lower bounds, stale rows
        + n * (4 + 8 + 2 * 4 * trials)  # k-means++: closest, its running sum, the trials' distances
        + 6 * 8 * k * d  # centres, sums and their copies
        + 4 * groups * k
        + 3 * 8 * min(k * k, GAP_VALUES)  # centre-to-centre half gaps, in blocks
        + in_flight * rows * (3 * 4 * k + 2 * 4 * d + 8 * k)  # blocks: distances, rows, moves
    )
    per_run_init = 2.0 * n * d * trials * k if init == "k-means++" else 0.0
    per_run = 2.0 * n * d * k * FULL_PASSES + 2.0 * k * k * d * min(max_iter, TYPICAL_ITERATIONS)
    rate = FLOPS_PER_SECOND * (THREADS if parallel else 1)
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"n_clusters must be an integer, got {k!r}")
    if not 1 <= k <= n_samples:
        raise ValueError(f"n_clusters must be between 1 and the number of samples ({n_samples}), got {k}")
    for name, value in (("max_iter", max_iter), ("n_init", n_init)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
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
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError("sample_weight must be finite, >= 0 and not all zero")
    return None if np.all(weights == 1) else weights


# ---------------------------------------------------------------------- data preparation


class Prepared:
    """X as the engine works on it: float32, centred, scaled into float32's comfortable range.

    Large data of small whole numbers (uint8 pixels, any integer type of 1 or 2 bytes) stays as it
    is and each block is converted when it is read: that costs what reading a float32 copy costs,
    and saves the copy (4 bytes per pixel). Other input, and small data (where the conversions
    would cost more than the copy), is copied to float32 once. `offset` and `scale` may be given
    (new data against fitted centres, or one chunk of a larger X): then they are used as they are.
    `weights` (N float64, or None for all ones) go with the rows. Without `column_sums`, small
    whole numbers skip them (tol_abs then takes them from the cluster sums of a first assignment).
    """

    def __init__(
        self,
        X: np.ndarray,
        offset: np.ndarray | None = None,
        scale: float | None = None,
        weights: np.ndarray | None = None,
        column_sums: bool = True,
    ):
        n = X.shape[0]
        given_offset = offset
        largest = _largest_magnitude(X)
        self.scale = _power_of_two_scale(largest) if scale is None else scale
        if offset is None:
            # Any offset gives the same clusters; one near the mean keeps float32 precise.
            # A strided sample of rows is near enough and costs no pass over X.
            sample = X[:: max(1, n // OFFSET_SAMPLE_ROWS)]
            offset = sample.sum(axis=0, dtype=np.float64) * self.scale / len(sample)
            if X.dtype.kind in "uib" and self.scale == 1:
                offset = np.round(offset)
        else:
            offset = np.asarray(offset, dtype=np.float64) * self.scale
        self.offset = offset.astype(np.float32)
        # Small whole numbers stay whole after a whole offset: float32 sums of a chunk of them
        # (at most CHUNK_ROWS rows of values below WHOLE_MAX) are then exact.
        self.whole = (
            X.dtype.kind in "uib"
            and self.scale == 1
            and largest <= WHOLE_MAX
            and bool(np.all(self.offset == np.round(self.offset)))
        )
        self.weights = weights
        self.shape = X.shape
        self._local = threading.local()  # per-thread scratch for converted blocks (see block)
        compact = self.whole and X.dtype.itemsize <= 2 and X.size >= PARALLEL_MIN_VALUES
        self.raw = X if compact else None
        self.x = None if compact else np.empty(X.shape, dtype=np.float32)
        self.rows_for_keys = X if compact else self.x  # what distinct-image checks compare
        # Compact rows may go into the matrix products as stored, without the offset (a pass
        # over each block saved): `lloyd_shift` is then the offset, what those coordinates add to
        # the centred ones. Only while the offset is not far larger than the rows' spread: float32
        # products round like the values they multiply, and more rounding means more near ties
        # to settle in float64 (|offset|^2 against the mean |x - offset|^2: MNIST 0.7, the
        # benchmark's grey blobs 4.8, 16 % faster so; nearly flat data stays centred).
        self.lloyd_shift = np.zeros(X.shape[1])
        self.offset_norm = 0.0
        self.xn2 = np.empty(n, dtype=np.float64)
        self.column_sums: list[np.ndarray] = []  # per chunk of rows (none: see tol_abs)
        sum_columns = column_sums or not self.whole
        self.parallel = THREADS > 1 and X.size >= PARALLEL_MIN_VALUES  # worth worker threads
        if self.parallel:
            # As in the fit: blocks on worker threads, BLAS single-threaded in them (its own
            # threads on top would contend for the same cores: 10x slower on a loaded machine).
            with ThreadPoolExecutor(THREADS) as pool, threadpool_limits(1, user_api="blas"):
                list(pool.map(lambda rows: self._fill(X, rows, sum_columns), chunks(n, FILL_TASK_ROWS)))
        else:
            for rows in chunks(n, FILL_TASK_ROWS):
                self._fill(X, rows, sum_columns)
        self.wxn2 = self.xn2 if weights is None else weights * self.xn2  # weighted squared norms
        offset64 = self.offset.astype(np.float64)
        if compact and given_offset is None and offset64 @ offset64 <= SHIFT_MAX * self.xn2.mean():
            self.lloyd_shift = offset64
            self.offset_norm = math.sqrt(offset64 @ offset64)

    def block(self, rows: slice | np.ndarray, scratch: bool = False) -> np.ndarray:
        """Rows of X as float32, scaled and centred (a new array, or a view of the float32 copy).

        With `scratch`, converted rows go into this thread's reusable buffer, valid until its next
        scratch read: a fresh multi-megabyte array per block costs the kernel's page faults, which
        made the conversion 8x slower than the copy into warm memory.
        """
        if self.x is not None:
            return self.x[rows]
        values = self._converted(rows, scratch)
        values -= self.offset
        return values

    def lloyd_block(self, rows: slice | np.ndarray, scratch: bool = False) -> np.ndarray:
        """Rows as float32 in the coordinates of the assignment's matrix products: as stored
        (compact data with a `lloyd_shift`), else centred as `block`; `scratch` as there."""
        if self.x is not None or not self.offset_norm:
            return self.block(rows, scratch)
        return self._converted(rows, scratch)

    def _converted(self, rows: slice | np.ndarray, scratch: bool) -> np.ndarray:
        """Stored rows as float32: a new array, or a view of this thread's scratch buffer."""
        raw = self.raw[rows]
        if not scratch:
            return raw.astype(np.float32)
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < len(raw):
            buffer = self._local.buffer = np.empty((max(len(raw), CHUNK_ROWS), raw.shape[1]), np.float32)
        values = buffer[: len(raw)]
        np.copyto(values, raw, casting="unsafe")
        return values

    def _fill(self, X: np.ndarray, rows: slice, sum_columns: bool) -> None:
        """Rows of the float32 copy (when there is one), their squared norms and column sums.

        In steps of FILL_ROWS rows, so that each step's converted rows are still in the core's
        cache when the norms and sums read them (MNIST: 50 -> 41 ms in one thread, 34 -> 30 in two)."""
        sums = np.zeros(X.shape[1])
        for part in chunks(rows.stop - rows.start, FILL_ROWS):
            part = slice(rows.start + part.start, rows.start + part.stop)
            if self.x is None:
                chunk = self.block(part, scratch=True)
            else:
                chunk = self.x[part]
                np.subtract(X[part] if self.scale == 1 else X[part] * self.scale, self.offset, out=chunk)
            if sum_columns:
                sums += np.ones(len(chunk), dtype=np.float32) @ chunk
            norms = sq_norms(chunk)
            # Inertia is computed from these norms (see BlockState.energy), so they must be exact:
            # float32 is, for whole numbers below 2^24; other rows are redone in float64.
            inexact = np.flatnonzero(norms >= 2.0**24) if self.whole else np.arange(len(norms))
            if len(inexact):
                redo = chunk[inexact].astype(np.float64)
                norms = norms.astype(np.float64)
                norms[inexact] = np.einsum("ij,ij->i", redo, redo)
            self.xn2[part] = norms
        if sum_columns:
            self.column_sums.append(sums)

    def tol_abs(self, tol: float, column_sums: np.ndarray | None = None) -> float:
        """scikit-learn's tolerance: tol x the mean over features of the variance of X. The
        column sums (prepared space) may be given: the cluster sums of an unweighted assignment
        add up to them, exactly for small whole numbers (then Prepared need not make them)."""
        if tol == 0:
            return 0.0
        n, d = self.shape
        if column_sums is None:
            column_sums = np.sum(self.column_sums, axis=0, dtype=np.float64)
        column_means = column_sums / n  # var = E[x^2] - E[x]^2
        return tol * (self.xn2.sum() / n - float(column_means @ column_means)) / d

    def sq_distances(self, points: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
        """Squared distances from every row of X to each of `points` (N x len(points), float32)."""
        norms = sq_norms(points)
        work = lambda rows: sq_distances(self.block(rows, True), self.xn2[rows], points, norms)  # noqa: E731
        return np.concatenate(list(in_parallel(pool, work, chunks(self.shape[0]))))

    def closest_to(
        self,
        points: np.ndarray,
        out: np.ndarray,
        pool: ThreadPoolExecutor | None,
        closest: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Squared distances from every row to each of `points` (P x D float64, prepared space),
        lowered to `closest` (N) when given, into `out` (P x N float32); returns each point's
        potential, the sum of its row of `out` (weighted by `weights` when given). One pass, block by block: the
        seeding's step (float32 products; a near tie only moves a draw's odds by ~1e-7)."""
        c32 = points.astype(np.float32).astype(np.float64)
        minus2_t = np.ascontiguousarray(-2 * c32.T, dtype=np.float32)
        adjust = (np.einsum("ij,ij->i", c32, c32) + 2 * (c32 @ self.lloyd_shift)).astype(np.float32)

        def work(rows: slice) -> np.ndarray:
            d2 = self.lloyd_block(rows, scratch=True) @ minus2_t
            d2 += adjust
            d2 += self.xn2[rows, None].astype(np.float32)
            np.maximum(d2, 0.0, out=d2)
            if closest is not None:
                np.minimum(d2, closest[rows, None], out=d2)
            out[:, rows] = d2.T
            if weights is None:
                return d2.sum(axis=0, dtype=np.float64)
            return weights[rows] @ d2

        return np.sum(list(in_parallel(pool, work, chunks(self.shape[0]))), axis=0)

    def nearest_of(
        self, points: np.ndarray, pool: ThreadPoolExecutor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """For every row, the squared distance to the nearest of `points` (P x D float64, prepared
        space; N float32) and which one it is (N int32): one pass, block by block."""
        c32 = points.astype(np.float32).astype(np.float64)
        minus2_t = np.ascontiguousarray(-2 * c32.T, dtype=np.float32)
        adjust = (np.einsum("ij,ij->i", c32, c32) + 2 * (c32 @ self.lloyd_shift)).astype(np.float32)

        def work(rows: slice) -> tuple[np.ndarray, np.ndarray]:
            d2 = self.lloyd_block(rows, scratch=True) @ minus2_t
            d2 += adjust
            index = d2.argmin(axis=1).astype(np.int32)
            nearest = d2[np.arange(len(index)), index] + self.xn2[rows].astype(np.float32)
            return np.maximum(nearest, 0.0, out=nearest), index

        parts = list(in_parallel(pool, work, chunks(self.shape[0])))
        return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])

    def transform_centers(self, centers: np.ndarray) -> np.ndarray:
        return centers * self.scale - self.offset

    def restore_centers(self, centers: np.ndarray) -> np.ndarray:
        return (centers + self.offset) / self.scale


def _largest_magnitude(X: np.ndarray) -> float:
    """The largest |value| in X (for bytes, the type's bound: no pass over the data)."""
    if X.dtype.kind in "uib":
        if X.dtype.itemsize == 1:
            return 255.0
        return float(max(abs(int(X.max())), abs(int(X.min()))))  # Python ints: no overflow
    return float(np.max(np.abs(X)))


def _power_of_two_scale(largest: float) -> float:
    """1, or an exact power of two that brings huge or tiny data near 1 (no overflow in x.x).

    Applies to integers too: int64 values near 2^62 would overflow float32's squares.
    """
    if largest == 0 or 2.0**-40 <= largest <= 2.0**40:
        return 1.0
    return 2.0 ** -math.ceil(math.log2(largest))


def chunks(n: int, size: int = CHUNK_ROWS):
    """Consecutive slices of at most `size` rows covering 0..n."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def in_parallel(pool: ThreadPoolExecutor | None, work, items):
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


# ---------------------------------------------------------------------- distances


def sq_norms(a: np.ndarray) -> np.ndarray:
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


def nearest(x: np.ndarray, xn2: np.ndarray, centers: np.ndarray, centers32: np.ndarray, cn2: np.ndarray):
    """Nearest centre of each row, and |c|^2 - 2 x.c for every centre (rows x K, float32).

    float32 products decide all but near ties; a tie closer than float32 can tell (relative
    margin under TIE_MARGIN) is decided again in float64 from direct differences, so labels are
    those of exact arithmetic whatever the rounding.
    """
    d2 = _relative_sq_distances(x, centers32, cn2)
    labels, best, second = _two_smallest(d2)
    if d2.shape[1] > 1:
        margin = TIE_MARGIN * (xn2 + cn2.max())
        close = np.flatnonzero(second - best <= margin)
        if len(close):
            limit = (best[close] + margin[close])[:, None]
            labels[close] = _exact_nearest(x[close], d2[close] <= limit, centers)
    return labels, d2


def _exact_nearest(x: np.ndarray, candidates: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Per row of x, the nearest in float64 of its candidate centres (rows x K mask), the lowest
    index on exact ties. Only centres within float32's margin of the nearest can be nearest, so
    memory and work grow with the candidate pairs, not with K (ties can be many: duplicate images)."""
    rows, columns = np.nonzero(candidates)  # by row, then by centre index
    centers64 = np.asarray(centers, dtype=np.float64)
    exact = np.empty(len(rows), dtype=np.float64)
    for part in chunks(len(rows), max(1, TIE_BLOCK_VALUES // x.shape[1])):
        difference = x[rows[part]].astype(np.float64) - centers64[columns[part]]
        exact[part] = np.einsum("ij,ij->i", difference, difference)
    order = np.lexsort((columns, exact, rows))  # by row, then distance, then centre
    first = np.r_[True, rows[order][1:] != rows[order][:-1]]
    return columns[order][first]


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


def sq_distances(x: np.ndarray, xn2: np.ndarray, centers: np.ndarray, cn2: np.ndarray) -> np.ndarray:
    """Squared distances (rows x K, float32): |x|^2 - 2 x.c + |c|^2, never negative."""
    d2 = _relative_sq_distances(x, centers, cn2)
    d2 += xn2[:, None]
    return np.maximum(d2, 0.0, out=d2)


def sq_distances_to_own(x: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared distance of each row to its own centre, from direct differences (0 when equal)."""
    return sq_norms(x - centers.astype(np.float32)[labels])


# ---------------------------------------------------------------------- Lloyd with bounds


class Centers:
    """The centres as every block needs them in one iteration, computed once and sent to all.

    `values` K x D float64 in the prepared space; `shift` how far each moved in the last update
    (None before the first assignment); the float32 copy with its norms; and, on demand,
    `half_gaps` (G x K float32): half the distance from each centre to the nearest other centre
    of each bound group.
    """

    def __init__(self, values: np.ndarray, shift: np.ndarray | None = None):
        self.values = values
        self.shift = shift
        self.c32 = values.astype(np.float32)
        self.cn2 = sq_norms(self.c32)
        self.groups = group_sizes(len(values))[1]
        self._half_gaps: np.ndarray | None = None

    @property
    def half_gaps(self) -> np.ndarray:
        if self._half_gaps is None:
            self._half_gaps = grouped_half_gaps(self.values, self.groups)
        return self._half_gaps


def group_sizes(k: int) -> tuple[int, int]:
    """Centres per bound group and the number G of groups: each centre its own up to MAX_GROUPS,
    beyond, centre j in group j mod G (some groups one short). Strided groups make a group's
    minimum a minimum of contiguous column slices (d[:, m*G:(m+1)*G] over members m), 2.4x
    faster than over neighbouring columns; centre indices carry no meaning, so bounds are as good."""
    size = -(-k // MAX_GROUPS)
    return size, -(-k // size)


def group_maxima(values: np.ndarray, groups: int) -> np.ndarray:
    """The largest of `values` (K, >= 0) in each bound group (see group_sizes)."""
    size = -(-len(values) // groups)
    padded = np.zeros(size * groups, dtype=values.dtype)
    padded[: len(values)] = values
    return padded.reshape(size, groups).max(axis=0)


class _Products:
    """The centres as a block's matrix product needs them, in the data's Lloyd coordinates
    (Prepared.lloyd_block), padded with never-nearest columns to whole bound groups."""

    def __init__(self, values: np.ndarray, data: Prepared, group_size: int, groups: int):
        k = len(values)
        self.k, self.values = k, values
        c64 = values.astype(np.float32).astype(np.float64)
        width = group_size * groups
        self.width = width
        # OpenBLAS's float32 kernel is faster on 8 or 16 columns than on 9 to 15 (16 cost 0.8x 10)
        # on large data's blocks: zero columns pad the product, dropped from its result (see
        # BlockState._reassign). Not on small data, run in one thread: there 8 columns for K=3
        # made a USPS fit 2.3x slower (BLAS's own threads wake for the wider product).
        padded = width
        if data.parallel and width < 16 and width % 8:
            padded = 8 if width < 8 else 16
        self.minus2_t = np.zeros((values.shape[1], padded), dtype=np.float32)
        self.minus2_t[:, :k] = -2 * c64.T
        norms = np.einsum("ij,ij->i", c64, c64)
        self.adjust = np.full(width, np.inf, dtype=np.float32)
        # |x_c - c|^2 - |x_c|^2 = |c|^2 - 2 x_c.c, and with x_c = x - shift: |c|^2 + 2 shift.c - 2 x.c
        self.adjust[:k] = norms + 2 * (c64 @ data.lloyd_shift)
        self.largest = math.sqrt(norms.max())  # the longest centre: what the product's rounding scales with


def _group_minima(d: np.ndarray, size: int) -> np.ndarray:
    """Per row, the minimum over each bound group (rows x G; d holds size x G columns, column
    m*G + g the member m of group g, see group_sizes)."""
    if size == 1:
        return d
    groups = d.shape[1] // size
    out = d[:, :groups].copy()
    for member in range(1, size):  # contiguous slices: numpy reduces short rows slowly
        np.minimum(out, d[:, member * groups : (member + 1) * groups], out=out)
    return out


def _moves(points: np.ndarray, old: np.ndarray, new: np.ndarray, k: int, weights, whole: bool):
    """How the clusters' sums and counts (or weights) change when `points` move from `old` to
    `new` (old = -1: from no cluster yet): the clusters touched, the change of their sums
    (touched x D), and the change of all K counts.

    A +w/-w matrix (clusters x points) times the points: dense for few clusters (one BLAS call),
    sparse beyond (its cost does not grow with K). float32 is exact on small whole numbers
    (see Prepared.whole); weighted sums are summed in float64.
    """
    m = len(points)
    dtype = np.float32 if whole and weights is None else np.float64
    join = np.ones(m, dtype=dtype) if weights is None else weights.astype(dtype)
    left = np.flatnonzero(old >= 0)
    counts = np.bincount(new, weights=weights, minlength=k)
    if len(left):
        counts = counts - np.bincount(
            old[left], weights=None if weights is None else weights[left], minlength=k
        )
    if k <= DENSE_MOVES:
        matrix = np.zeros((k, m), dtype=dtype)
        matrix[new, np.arange(m)] = join
        matrix[old[left], left] -= join[left]
        return slice(None), matrix @ points.astype(dtype, copy=False), counts
    import scipy.sparse  # beyond 32 clusters only: kept off the command line's start-up path

    clusters = np.concatenate([new, old[left]])
    order = np.argsort(clusters, kind="stable")
    per_cluster = np.bincount(clusters, minlength=k)
    touched = np.flatnonzero(per_cluster)
    indptr = np.zeros(len(touched) + 1, dtype=np.int64)
    np.cumsum(per_cluster[touched], out=indptr[1:])
    columns = np.concatenate([np.arange(m), left])[order]
    values = np.concatenate([join, -join[left]])[order]
    matrix = scipy.sparse.csr_array((values, columns, indptr), shape=(len(touched), m))
    return touched, matrix @ points.astype(dtype, copy=False), counts


def grouped_half_gaps(centers: np.ndarray, groups: int) -> np.ndarray:
    """[g, a]: half the distance from centre a to the nearest other centre of group g (G x K float32,
    groups as in group_sizes).

    Made a block of centres at a time (K x at most GAP_VALUES / K values), never the K x K matrix:
    K = 60,000 centres would need 27 GiB for it.
    """
    k = len(centers)
    size = -(-k // groups)
    cn2 = sq_norms(centers)
    out = np.empty((groups, k), dtype=np.float32)
    for part in chunks(k, max(1, GAP_VALUES // k)):
        half = np.full((size * groups, part.stop - part.start), np.inf)  # rows past K: no centre
        real = half[:k]  # K x block: |a|^2 + |b|^2 - 2 a.b, then half its root
        np.add(cn2[:, None], cn2[None, part], out=real)
        products = centers @ centers[part].T
        products *= 2
        real -= products
        del products
        np.maximum(real, 0.0, out=real)
        np.sqrt(real, out=real)
        real *= 0.5
        real[np.arange(part.start, part.stop), np.arange(part.stop - part.start)] = np.inf
        out[:, part] = half.reshape(size, groups, -1).min(axis=0)
    return out


def block_rows(k: int, n: int | None = None) -> int:
    """Rows per block of the assignment: ASSIGN_ROWS up to K = 1024, then fewer, so that a block's
    rows x K distances stay near BLOCK_VALUES whatever K; and, for N rows, at most N / (4 x THREADS)
    (but CHUNK_ROWS): blocks enough to share out. MNIST's 70,000 rows take whole blocks of 4,096
    (at most N / 32 there took 2,187: K=10 and 32 were 6 % slower, more numpy calls per row)."""
    rows = min(ASSIGN_ROWS, BLOCK_VALUES // k)
    if n is not None:
        rows = min(rows, max(CHUNK_ROWS, n // (4 * THREADS)))
    return max(MIN_BLOCK_ROWS, rows)


class _Run(NamedTuple):
    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    converged: bool
    n_reseeds: int


class BlockState:
    """Labels, distance bounds and the per-cluster sums of a block of rows, for incremental iterations.

    The unit a distributed engine keeps per chunk: `Centers` go in (`assign`, `stale_rows`), the
    block's cluster sums and counts, its energy and its farthest points come back.

    Bounds as Elkan's, over groups of centres as Yinyang's: `upper[i]` >= the distance of point i
    to its own centre, `lower[g, i]` <= its distance to every other centre of group g (G x N, so
    the per-point minimum runs over contiguous rows). Up to MAX_GROUPS centres each centre is its
    own group (Elkan); beyond, strided groups (centre j in group j mod G) keep it at G x N.
    When centres move by `shift`, upper grows by its centre's shift and lower[g] shrinks by the
    largest shift in g; a point needs a look only if some group g could hold a nearer centre:
    upper > lower[g], and upper > half the distance from its centre to the nearest other one.
    """

    # Bounds carry float32 rounding: widen them by more than it, so no skip is ever wrong.
    SLACK_UP = 1 + 2.0**-16
    SLACK_DOWN = np.float32(1 - 2.0**-16)

    def __init__(self, data: Prepared, k: int, pool: ThreadPoolExecutor | None = None):
        n, d = data.shape
        self.data, self.pool = data, pool
        self.labels = np.full(n, -1, dtype=np.int32)
        self.upper = np.empty(n, dtype=np.float64)
        self.group_size, self.groups = group_sizes(k)
        self.rows = block_rows(k, n)
        self.lower = np.empty((self.groups, n), dtype=np.float32)
        self.weights = data.weights
        self.sums = np.zeros((k, d), dtype=np.float64)  # weighted sums of each cluster's points
        self.counts = np.zeros(k, dtype=np.int64 if self.weights is None else np.float64)  # or weights
        # Passes left that keep no bounds. The first pass's are never of use: after the first
        # update the centres move so far that every point is stale (MNIST K = 10 to 256, the
        # benchmark's blobs); on heavily overlapping clusters they never are (see stale_rows).
        self.skip_bounds = 1
        self.bounded = False  # whether upper and lower hold valid bounds for every point

    def assign(self, centers: Centers, stale: np.ndarray | None = None) -> int:
        """Reassign the stale points (all when None) to their nearest centre; return how many moved.

        Blocks are independent, so worker threads take them (numpy and BLAS release the GIL);
        only the shared sums are updated here, block by block, in order.
        """
        products = _Products(centers.values, self.data, self.group_size, self.groups)
        keep = self.skip_bounds == 0
        self.skip_bounds = max(0, self.skip_bounds - 1)
        if stale is not None and not self.bounded:
            raise ValueError("stale rows given, but the bounds were not kept: assign them all")
        moved = 0
        net = np.zeros_like(self.counts)  # points (or weight) gained by each cluster
        dense = DENSE_FRACTION if products.k <= FEW_CENTERS else DENSE_FRACTION_MANY
        blocks = _blocks(self.data.shape[0], stale, self.rows, dense)
        work = lambda block: self._reassign(block, products, keep)  # noqa: E731
        for n_moved, touched, sums, counts in in_parallel(self.pool, work, blocks):
            if n_moved:
                moved += n_moved
                self.sums[touched] += sums
                net += counts
        self.counts += net
        self.bounded = keep
        if self.data.offset_norm:  # the sums moved are of rows as stored: back to the centred space
            self.sums -= net[:, None] * self.data.lloyd_shift
        if self.weights is not None:
            # Weight totals recounted exactly (an emptied cluster weighs exactly 0, as its sums).
            k = len(self.counts)
            self.counts = np.bincount(self.labels, weights=self.weights, minlength=k)
            self.sums[np.bincount(self.labels, minlength=k) == 0] = 0.0
        return moved

    def _reassign(self, block, products: _Products, keep: bool = True):
        """One block: new labels (and bounds, if `keep`); how many points changed cluster, and
        the change of the cluster sums and counts (in the centred space) that their moves make."""
        data = self.data
        xn2 = data.xn2[block]
        rows = np.arange(len(xn2))
        points = data.lloyd_block(block, scratch=True)
        d = points @ products.minus2_t  # -2 x.c, then + |c|^2 (+ 2 shift.c): |x - c|^2 - |x|^2
        if d.shape[1] > products.width:
            d = d[:, : products.width]
        d += products.adjust
        new = d.argmin(axis=1).astype(np.int32)
        best = d[rows, new]
        d[rows, new] = np.inf  # the lower bounds are on the other centres
        if keep or self.group_size == 1:
            others = _group_minima(d, self.group_size).T.copy()  # G x rows
            second = np.minimum.reduce(others, axis=0)
        else:
            others, second = None, d.min(axis=1)
        if products.k > 1:
            self._settle_ties(points, xn2, products, d, new, best, second, others)
        if keep:
            upper = best + xn2
            np.maximum(upper, 0.0, out=upper)
            self.upper[block] = np.sqrt(upper) * self.SLACK_UP
            others += xn2.astype(np.float32)
            np.maximum(others, 0.0, out=others)
            np.sqrt(others, out=others)
            others *= self.SLACK_DOWN
            self.lower[:, block] = others
        old = self.labels[block].copy()  # a view when block is a slice
        self.labels[block] = new
        changed = np.flatnonzero(new != old)
        if not len(changed):
            return 0, None, None, None
        weights = None if self.weights is None else self.weights[block]
        if len(changed) < len(new):
            points, old, new = points[changed], old[changed], new[changed]
            weights = None if weights is None else weights[changed]
        touched, sums, counts = _moves(points, old, new, products.k, weights, data.whole)
        return len(changed), touched, sums, counts.astype(self.counts.dtype, copy=False)

    def _settle_ties(self, points, xn2, products: _Products, d, new, best, second, others) -> None:
        """Near ties, decided again in float64 from direct differences (labels, bounds).

        A row is a near tie when its two nearest centres are closer than float32 rounding can
        tell apart; only centres within that margin of the nearest can be nearest, and only
        their distances are recomputed, so labels are those of exact arithmetic.
        """
        data = self.data
        gap = second - best
        # Rounding grows with the values multiplied: TIE_MARGIN of |x| |-2c| + |c|^2 (rows as stored:
        # |x_c + offset| <= |x_c| + |offset|). The adjust's 2 offset.c is rounded once, to float32
        # (relative 2^-24): 2^-20 of it covers that. The block's largest row first (one comparison
        # per row), then each candidate's own size.
        c, shift = products.largest, data.offset_norm
        largest = math.sqrt(float(xn2.max())) + shift
        close = np.flatnonzero(gap <= TIE_MARGIN * c * (2 * largest + c) + 2.0**-20 * 2 * shift * c)
        if not len(close):
            return
        margin = TIE_MARGIN * c * (2 * (np.sqrt(xn2[close]) + shift) + c) + 2.0**-20 * 2 * shift * c
        keep = gap[close] <= margin
        close, margin = close[keep], margin[keep]
        if not len(close):
            return
        d[close, new[close]] = best[close]
        for part in chunks(len(close), max(1, TIE_BLOCK_VALUES // (4 * points.shape[1]))):
            at = close[part]  # ties can be many (duplicate images): a few rows at a time
            near = d[at]
            row, col = np.nonzero(near <= (best[at] + margin[part])[:, None])
            exact = (points[at[row]].astype(np.float64) - data.lloyd_shift) - products.values[col]
            exact = np.einsum("ij,ij->i", exact, exact)
            decide = np.full(near.shape, np.inf)
            decide[row, col] = exact
            labels = decide.argmin(axis=1)  # in float64: the lowest index on an exact tie
            near[row, col] = exact - xn2[at[row]]
            r = np.arange(len(at))
            new[at] = labels
            best[at] = near[r, labels]
            near[r, labels] = np.inf
            if others is not None:
                others[:, at] = _group_minima(near, self.group_size).T

    def stale_rows(self, centers: Centers) -> np.ndarray | None:
        """Move the bounds by the centres' shift; return the points whose cluster may change
        (None: all of them, the bounds were not kept).

        Parts of the rows go to the worker threads (G x N bounds: serial, this was 13 % of an
        early iteration at K=32 on two threads). When nearly every point is stale, the bounds
        cost their upkeep and save nothing: the next SKIP_PASSES passes keep none (heavily
        overlapping clusters, such as the benchmark's blobs, are stale at every iteration)."""
        if not self.bounded:
            return None
        group_shift = (group_maxima(centers.shift, self.groups) * self.SLACK_UP).astype(np.float32)[:, None]
        half_gap = centers.half_gaps.min(axis=0)  # half the distance from each centre to its nearest other
        n = len(self.labels)
        size = BOUND_CHUNK if self.pool is None else min(BOUND_CHUNK, max(CHUNK_ROWS, -(-n // (4 * THREADS))))

        def work(part: slice) -> np.ndarray:
            labels = self.labels[part]
            upper = self.upper[part]
            upper += centers.shift[labels]
            lower = self.lower[:, part]
            lower -= group_shift
            # min over g of max(lower[g], half_gaps[g, label]) >= max(min over g of lower[g],
            # half the distance from the label to its nearest other centre): the per-group
            # maximum needs a G x N gather and pass, and on MNIST (K = 10 to 256) it proved
            # the same points but 0.2 % (the lower bounds are the larger term there).
            nearest_other = np.minimum.reduce(lower, axis=0)
            np.maximum(nearest_other, half_gap[labels], out=nearest_other)
            return np.flatnonzero(upper > nearest_other) + part.start

        stale = np.concatenate(list(in_parallel(self.pool, work, chunks(n, size))))
        if len(stale) >= USELESS_STALE * n:
            self.skip_bounds = SKIP_PASSES
        return stale

    def energy(self, centers: np.ndarray) -> float:
        """Inertia of the current labels against `centers`, from the sums alone (no pass over X).

        Per cluster: sum w|x|^2 - 2 c.sum wx + (sum w) |c|^2. The sums are exact for whole-number
        pixels, so a cluster of identical images gets exactly 0.
        """
        k = len(centers)
        own = np.bincount(self.labels, weights=self.data.wxn2, minlength=k)
        per_cluster = own - 2 * np.einsum("kd,kd->k", centers, self.sums) + self.counts * sq_norms(centers)
        return float(np.maximum(per_cluster, 0.0).sum())

    def farthest(self, centers: np.ndarray, m: int):
        """The m points farthest from their own centre: squared distances, labels, rows (float32)
        and weights (ones when unweighted). Points of weight 0 cannot fill a cluster: distance -1."""
        far = np.empty(self.data.shape[0], dtype=np.float64)
        for rows in chunks(len(far)):
            far[rows] = sq_distances_to_own(self.data.block(rows), centers, self.labels[rows])
        if self.weights is not None:
            far[self.weights == 0] = -1.0
        order = np.argsort(-far, kind="stable")[:m]
        weights = np.ones(len(order), dtype=np.int64) if self.weights is None else self.weights[order]
        return far[order], self.labels[order], self.data.block(order), weights


def update_centers(state: BlockState, centers: np.ndarray) -> tuple[np.ndarray, int]:
    """Means of the clusters; an empty cluster is re-seeded with the point farthest from its centre
    (scikit-learn's rule; with weights, a cluster of total weight 0 counts as empty)."""
    sums, counts = state.sums, state.counts
    empty = np.flatnonzero(counts == 0)
    if not len(empty):  # the usual case: no copies (K x D float64 each, 1 ms an iteration at K=256)
        return sums / counts[:, None], 0
    sums, counts = sums.copy(), counts.copy()
    reseeded = 0
    far, donors, rows, weights = state.farthest(centers, len(empty))
    if far[0] > 0:  # all points on their centres (K > distinct points): nothing to gain
        for cluster, donor, values, weight, distance in zip(empty, donors, rows, weights, far, strict=True):
            if distance < 0:
                continue
            sums[donor] -= values * weight
            counts[donor] -= weight
            sums[cluster] = values * weight
            counts[cluster] = weight
            reseeded += 1
    new = centers.copy()  # a cluster still empty keeps its centre
    filled = counts > 0
    new[filled] = sums[filled] / counts[filled, None]
    return new, reseeded


def _blocks(n: int, stale: np.ndarray | None, size: int = CHUNK_ROWS, dense_fraction: float = DENSE_FRACTION):
    """Row blocks to revisit: whole chunks where stale points are dense (over `dense_fraction`
    of the chunk: a contiguous product beats gathering them), the remaining stale rows gathered
    into blocks of `size` rows."""
    if stale is None:
        yield from chunks(n, size)
        return
    edges = np.searchsorted(stale, np.arange(0, n + size, size))
    dense = np.flatnonzero(np.diff(edges) > dense_fraction * size)
    for chunk in dense:
        yield slice(chunk * size, min((chunk + 1) * size, n))
    if len(dense):
        stale = stale[np.isin(stale // size, dense, invert=True)]
    for part in chunks(len(stale), size):
        yield stale[part]


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


def _against_centers(X: np.ndarray, centers: np.ndarray) -> tuple[Prepared, np.ndarray]:
    """X prepared around the centres' mean (any offset works; this one needs no extra state)."""
    scale = _power_of_two_scale(_largest_magnitude(centers))
    data = Prepared(X, offset=centers.mean(axis=0), scale=scale)
    return data, data.transform_centers(centers).astype(np.float32)


def labels_inertia(
    X: np.ndarray, centers: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Nearest centre of each row of X (int32, exact as in the fit) and the (weighted) sum of
    squared distances to it."""
    data, c32 = _against_centers(X, centers)
    weights = check_sample_weight(sample_weight, X.shape[0])
    labels = np.empty(X.shape[0], dtype=np.int32)
    cn2 = sq_norms(c32)
    inertia = 0.0
    for rows in chunks(X.shape[0], min(CHUNK_ROWS, block_rows(len(c32)))):
        points = data.block(rows)
        labels[rows] = nearest(points, data.xn2[rows], c32, c32, cn2)[0]
        d2 = sq_distances_to_own(points, c32, labels[rows])
        inertia += float(d2.sum(dtype=np.float64) if weights is None else weights[rows] @ d2)
    return labels, inertia / data.scale**2


def distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distances from each row of X to every centre (N x K, float64, computed in float64)."""
    scale = _power_of_two_scale(max(_largest_magnitude(centers), _largest_magnitude(X)))
    offset = centers.mean(axis=0) * scale
    c = centers * scale - offset
    cn2 = sq_norms(c)
    out = np.empty((X.shape[0], len(c)), dtype=np.float64)
    for rows in chunks(X.shape[0], min(CHUNK_ROWS, block_rows(len(c)))):
        x = X[rows] * scale - offset if scale != 1 else X[rows] - offset
        d2 = x @ c.T
        d2 *= -2
        d2 += sq_norms(x)[:, None]
        d2 += cn2
        out[rows] = d2
    np.maximum(out, 0.0, out=out)
    np.sqrt(out, out=out)
    return out / scale
