"""X as the engine reads it, block by block, and the distances it computes on those blocks.

`Prepared` holds the rows (uint8 kept as stored and converted per block on large data, else one
float32 copy), centred and scaled as scikit-learn centres them, with their squared norms; the
passes over it run in blocks of rows on worker threads (`chunks`, `in_parallel`). `nearest` is
the exact nearest centre of a block: one float32 matrix product decides the clear cases, near
ties are decided again in float64, so labels are those of exact arithmetic. The engine
(engine.py) and the bounds (bounds.py) build on these; nothing here knows about iterations.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

THREADS = os.cpu_count() or 1  # blocks are processed in parallel, BLAS single-threaded
PARALLEL_MIN_VALUES = 2**23  # smaller data runs in one thread: handing blocks over costs more
CHUNK_ROWS = 1024  # rows per block of the passes over X (the assignment's: see ASSIGN_ROWS)
FILL_ROWS = 512  # rows per step of Prepared's pass (norms, column sums): converted rows stay in cache
FILL_TASK_ROWS = 4096  # rows per task of that pass (fewer tasks: fewer hand-overs between threads)
OFFSET_SAMPLE_ROWS = 4096  # rows averaged for the centring offset
FEW_CENTERS = 32  # up to this K, the nearest two are found column by column
SHIFT_MAX = 8.0  # compact rows are multiplied as stored while |offset|^2 <= this x mean |x - offset|^2
TIE_MARGIN = 2.0**-14  # relative gap below which float32 cannot be trusted to pick the nearest centre
TIE_BLOCK_VALUES = 2**21  # float64 values per step of the exact tie-break (16 MB)
ASSIGN_ROWS = 4096  # rows per block of the assignment: fewer numpy calls per row, less time holding the GIL
WHOLE_MAX = 2.0**24 / (2 * ASSIGN_ROWS)  # whole numbers up to this sum exactly in float32 per block
SMALLEST_NORMAL = 2.0**-1022  # float64's smallest normal number


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
    `shift`: whether compact rows are multiplied as stored (see lloyd_shift; decided here when
    None, from X itself if the offset is not given, else no).
    """

    def __init__(
        self,
        X: np.ndarray,
        offset: np.ndarray | None = None,
        scale: float | None = None,
        weights: np.ndarray | None = None,
        column_sums: bool = True,
        shift: bool | None = None,
    ):
        n = X.shape[0]
        given_offset = offset
        largest = largest_magnitude(X)
        self.scale = power_of_two_scale(largest) if scale is None else scale
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
        if weights is not None:
            check_weighted_sums(weights, 2 * largest * self.scale, X.shape[1])
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
        # to settle in float64 (|offset|^2 against the mean |x - offset|^2 of a sample, up to
        # SHIFT_MAX; nearly flat data stays centred). Measured: bench/README.md, engine constants.
        self.lloyd_shift = np.zeros(X.shape[1])
        self.offset_norm = 0.0
        offset64 = self.offset.astype(np.float64)
        if shift is None:  # else given: part of a larger X, whose own decision it is
            shift = compact and given_offset is None and shifts_well(X, self.offset)
        if compact and shift:
            self.lloyd_shift = offset64
            self.offset_norm = math.sqrt(offset64 @ offset64)
        self._xn2 = np.empty(n, dtype=np.float64)
        self.column_sums: list[np.ndarray] = []  # per chunk of rows (none: see tol_abs)
        self.parallel = THREADS > 1 and X.size >= PARALLEL_MIN_VALUES  # worth worker threads
        # Compact rows without weights or column sums leave their norms to the first pass that
        # converts every row (the first assignment, or a seeding's first pass: see norms_of):
        # a pass over X saved.
        self._norms_ready = False
        if not (compact and weights is None and not column_sums):
            self._fill_all(X, column_sums or not self.whole)
        self._wxn2 = None if weights is None else weights * self._xn2  # weighted squared norms

    @property
    def xn2(self) -> np.ndarray:
        """Squared norms of the prepared rows (N float64, exact for whole numbers); made by a pass
        of their own if no pass has made them yet. Never first read on a worker thread."""
        if not self._norms_ready:  # deferred: compact rows, so `raw` is X
            self._fill_all(self.raw, False)
        return self._xn2

    @property
    def wxn2(self) -> np.ndarray:
        """The squared norms times the weights."""
        return self.xn2 if self._wxn2 is None else self._wxn2

    def norms_of(self, rows: slice | np.ndarray, points: np.ndarray) -> np.ndarray:
        """xn2[rows]; while the norms are still to be made, made here from `points` (those rows as
        lloyd_block gives them) and kept: a pass over all rows ends with norms_made()."""
        if self._norms_ready:
            return self._xn2[rows]
        norms = _exact_whole_norms(points, self.lloyd_shift if self.offset_norm else None)
        self._xn2[rows] = norms
        return norms

    def norms_made(self) -> None:
        """Every row's norm has gone through norms_of (a pass over all rows has ended)."""
        self._norms_ready = True

    def _fill_all(self, X: np.ndarray, sum_columns: bool) -> None:
        """The pass that makes the norms (and the float32 copy, the column sums where asked)."""
        n = self.shape[0]
        if self.parallel:
            # As in the fit: blocks on worker threads, BLAS single-threaded in them (its own
            # threads on top would contend for the same cores).
            with ThreadPoolExecutor(THREADS) as pool, threadpool_limits(1, user_api="blas"):
                list(pool.map(lambda rows: self._fill(X, rows, sum_columns), chunks(n, FILL_TASK_ROWS)))
        else:
            for rows in chunks(n, FILL_TASK_ROWS):
                self._fill(X, rows, sum_columns)
        self._norms_ready = True

    def block(self, rows: slice | np.ndarray, scratch: bool = False) -> np.ndarray:
        """Rows of X as float32, scaled and centred (a new array, or a view of the float32 copy).

        With `scratch`, converted rows go into this thread's reusable buffer, valid until its next
        scratch read: a fresh multi-megabyte array per block costs the kernel's page faults, which
        cost far more than the conversion itself.
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
            # CHUNK_ROWS rows, not more than X has: a few very wide images must not cost 1,024 rows
            rows = max(len(raw), min(CHUNK_ROWS, self.shape[0]))
            buffer = self._local.buffer = np.empty((rows, raw.shape[1]), np.float32)
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
            # Inertia is computed from these norms (see BlockState.energy), so they must be exact:
            # float32 is, for whole numbers below 2^24; other rows are summed in float64.
            self._xn2[part] = (
                _exact_whole_norms(chunk, None) if self.whole else sq_norms(chunk.astype(np.float64))
            )
        if sum_columns:
            self.column_sums.append(sums)

    def tol_abs(self, tol: float, column_sums: np.ndarray | None = None) -> float:
        """scikit-learn's tolerance: tol x the mean over features of the variance of X. The
        column sums (prepared space) may be given: the cluster sums of an unweighted assignment
        add up to them, exactly for small whole numbers (then Prepared need not make them)."""
        if tol == 0:
            return 0.0
        if column_sums is None:
            column_sums = np.sum(self.column_sums, axis=0, dtype=np.float64)
        return variance_tolerance(tol, self.xn2.sum(), column_sums, self.shape[0])

    def sq_distances(self, points: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
        """Squared distances from every row of X to each of `points` (N x len(points), float32)."""
        norms, xn2 = sq_norms(points), self.xn2
        work = lambda rows: sq_distances(self.block(rows, True), xn2[rows], points, norms)  # noqa: E731
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
            points = self.lloyd_block(rows, scratch=True)
            d2 = points @ minus2_t
            d2 += adjust
            d2 += self.norms_of(rows, points)[:, None].astype(np.float32)
            np.maximum(d2, 0.0, out=d2)
            if closest is not None:
                np.minimum(d2, closest[rows, None], out=d2)
            out[:, rows] = d2.T
            if weights is None:
                return d2.sum(axis=0, dtype=np.float64)
            return weights[rows] @ d2

        potentials = np.sum(list(in_parallel(pool, work, chunks(self.shape[0]))), axis=0)
        self.norms_made()
        return potentials

    def nearest_of(
        self, points: np.ndarray, pool: ThreadPoolExecutor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """For every row, the squared distance to the nearest of `points` (P x D float64, prepared
        space; N float32) and which one it is (N int32): one pass, block by block."""
        c32 = points.astype(np.float32).astype(np.float64)
        minus2_t = np.ascontiguousarray(-2 * c32.T, dtype=np.float32)
        adjust = (np.einsum("ij,ij->i", c32, c32) + 2 * (c32 @ self.lloyd_shift)).astype(np.float32)

        def work(rows: slice) -> tuple[np.ndarray, np.ndarray]:
            points = self.lloyd_block(rows, scratch=True)
            d2 = points @ minus2_t
            d2 += adjust
            index = d2.argmin(axis=1).astype(np.int32)
            nearest = d2[np.arange(len(index)), index] + self.norms_of(rows, points).astype(np.float32)
            return np.maximum(nearest, 0.0, out=nearest), index

        parts = list(in_parallel(pool, work, chunks(self.shape[0])))
        self.norms_made()
        return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])

    def transform_centers(self, centers: np.ndarray) -> np.ndarray:
        return centers * self.scale - self.offset

    def restore_centers(self, centers: np.ndarray) -> np.ndarray:
        return (centers + self.offset) / self.scale


def shifts_well(X: np.ndarray, offset: np.ndarray) -> bool:
    """Whether compact rows of X may be multiplied as stored (see Prepared's lloyd_shift)."""
    offset64 = offset.astype(np.float64)
    return bool(offset64 @ offset64 <= SHIFT_MAX * _mean_sq_norm(X, offset))


def _mean_sq_norm(X: np.ndarray, offset: np.ndarray) -> float:
    """Mean of |x - offset|^2 over a strided sample of about 512 rows (a speed choice rests on it)."""
    sample = X[:: max(1, X.shape[0] // 512)].astype(np.float64) - offset
    return float(np.einsum("ij,ij->", sample, sample)) / len(sample)


def _exact_whole_norms(points: np.ndarray, shift: np.ndarray | None) -> np.ndarray:
    """|x - shift|^2 (float64, exact) of float32 rows of whole numbers (shift: whole, or None for 0).

    float32 is exact while every partial sum stays below 2^24: |x|^2 when it is below 2^24, and
    x.shift when |x| |shift| is (Cauchy-Schwarz bounds every partial sum); then
    |x|^2 - 2 x.shift + |shift|^2 is exact in float64. Other rows are summed in float64.
    """
    norms = sq_norms(points).astype(np.float64)
    inexact = norms >= 2.0**24
    if shift is not None:
        shift_sq = float(shift @ shift)
        inexact |= np.sqrt(norms) * math.sqrt(shift_sq) >= 2.0**24
        norms += shift_sq - 2 * (points @ shift.astype(np.float32)).astype(np.float64)
    redo = np.flatnonzero(inexact)
    if len(redo):
        rows = points[redo].astype(np.float64) - (0.0 if shift is None else shift)
        norms[redo] = np.einsum("ij,ij->i", rows, rows)
    return norms


def variance_tolerance(tol: float, norm_sum: float, column_sums: np.ndarray, n: int) -> float:
    """scikit-learn's tolerance for n rows: tol x the mean over features of their variance, from
    the sum of their squared norms and their column sums (var = E[x^2] - E[x]^2)."""
    if tol == 0:
        return 0.0
    column_means = column_sums / n
    return tol * (norm_sum / n - float(column_means @ column_means)) / len(column_sums)


def largest_magnitude(X: np.ndarray) -> float:
    """The largest |value| in X (for bytes, the type's bound: no pass over the data; for others
    max and -min, which need no |X| copy)."""
    if X.size == 0:
        return 0.0
    if X.dtype.kind in "uib":
        if X.dtype.itemsize == 1:
            return 255.0
        return float(max(abs(int(X.max())), abs(int(X.min()))))  # Python ints: no overflow
    return float(max(X.max(), -X.min()))


def power_of_two_scale(largest: float) -> float:
    """1, or an exact power of two that brings huge or tiny data near 1 (no overflow in x.x).

    Applies to integers too: int64 values near 2^62 would overflow float32's squares. Data whose
    largest value is below float64's smallest normal number (2^-1022) cannot be scaled exactly
    (subnormal values have lost their digits already): ValueError.
    """
    if largest == 0 or 2.0**-40 <= largest <= 2.0**40:
        return 1.0
    if largest < SMALLEST_NORMAL:
        raise ValueError(
            f"every value is below {SMALLEST_NORMAL:.3g} in magnitude (largest {largest:.3g}), too small for "
            "float64 to compute distances between them: multiply the data by a large constant (say 1e300) first"
        )
    return 2.0 ** -math.ceil(math.log2(largest))


def check_weighted_sums(weights: np.ndarray, reach: float, n_features: int) -> None:
    """ValueError when weighted sums of the prepared rows (values within +-reach) could overflow
    float64: the centres would be NaN (scikit-learn refuses such weights too). The bound is the
    largest weighted sum of squared distances, sum(w) x D x (2 reach)^2, against 2^1000."""
    with np.errstate(over="ignore"):
        total = float(np.sum(weights))
        bound = total * n_features * (2 * reach) ** 2
    if not bound < 2.0**1000:
        raise ValueError(
            f"sample_weight is too large for these data: weights summing to {total:.3g} would overflow "
            "float64 in the weighted sums of the fit; divide sample_weight by a common factor "
            "(the clusters do not change)"
        )


def unscaled_sum_of_squares(total: float, scale: float) -> float:
    """A sum of squares computed at `scale` (power_of_two_scale), in the data's own units:
    divided twice (scale**2 itself may underflow to 0 or overflow); infinity when the true sum is
    beyond float64 (data near its limit), as scikit-learn reports it."""
    with np.errstate(over="ignore", under="ignore"):
        return float(np.float64(total) / scale / scale)


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


def sq_distances_to_own(
    x: np.ndarray, centers: np.ndarray, labels: np.ndarray, accumulate: type = np.float32
) -> np.ndarray:
    """Squared distance of each row to its own centre, from direct float32 differences (0 when
    equal), summed in `accumulate` (float32: the fit's speed; float64: the distances files show).
    The engine's one routine for these distances (the fit's farthest points, inertia of new data,
    the distances of assignments.csv and predict)."""
    differences = x - centers.astype(np.float32)[labels]
    if accumulate == np.float32:
        return sq_norms(differences)
    return np.einsum("ij,ij->i", differences, differences, dtype=accumulate)
