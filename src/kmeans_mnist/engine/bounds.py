"""Lloyd's per-block state with distance bounds: what lets most points skip most iterations.

A `BlockState` holds, for a block of rows (all of X in memory, one chunk on a Dask worker), the
labels, an upper bound on each point's distance to its own centre, lower bounds on its distance
to the other centres (one per bound group) and the float64 cluster sums, updated only for the
points that changed cluster. `Centers` is what every block needs of the centres in one
iteration (computed once, sent to all); `update_centers` turns the summed blocks into the next
centres with scikit-learn's empty-cluster rule. The loop over iterations is engine.lloyd.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .prepared import (
    ASSIGN_ROWS,
    CHUNK_ROWS,
    FEW_CENTERS,
    THREADS,
    TIE_BLOCK_VALUES,
    TIE_MARGIN,
    Prepared,
    chunks,
    in_parallel,
    sq_distances_to_own,
    sq_norms,
)

DENSE_FRACTION = 0.7  # above this share of stale rows in a chunk, the whole chunk is recomputed
DENSE_FRACTION_MANY = 0.9  # beyond FEW_CENTERS centres: a row's product costs more than its gather
BOUND_CHUNK = 65536  # points per step of the bound test: K x this many float32 of scratch
MAX_GROUPS = 32  # bound groups: each centre its own up to this K, then strided groups (group_sizes)
DENSE_MOVES = 8  # up to this K, cluster sums move by a dense one-hot product, beyond by a sparse one
BLOCK_VALUES = 2**22  # rows x K values per block of the assignment: fewer rows per block beyond K=1024
MIN_BLOCK_ROWS = 16
GAP_VALUES = 2**21  # values (float64) per step of the centre-to-centre distances: 16 MB
USELESS_STALE = 0.98  # a bound test that finds this share of the points stale saved nothing: then
SKIP_PASSES = 2  # this many passes keep no bounds (all points are looked at) before they are tried again


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
        # OpenBLAS's float32 kernel is faster on 8 or 16 columns than on 9 to 15 on large data's
        # blocks: zero columns pad the product, dropped from its result (see
        # BlockState._reassign). Not on small data, run in one thread, where BLAS's own threads
        # wake for the wider product and cost more than they save.
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


def _moves(points: np.ndarray, moved, old: np.ndarray, new: np.ndarray, k: int, weights, whole: bool):
    """How the clusters' sums and counts (or weights) change when the `moved` rows of `points`
    (indices, or a slice for all) move from `old` to `new` (old = -1: from no cluster yet): the
    change of the K sums (K x D) and of the K counts.

    A +w/-w matrix (clusters x points) times the points: dense up to DENSE_MOVES clusters (one
    BLAS call on the moved rows, gathered), sparse beyond (its cost does not grow with K, and it
    reads the moved rows where they are: MNIST K=32 6 % faster a 10-iteration fit, K=256 3 %).
    float32 is exact on small whole numbers (see Prepared.whole); weighted sums are summed in
    float64.
    """
    m = len(new)
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
        return matrix @ points[moved].astype(dtype, copy=False), counts
    import scipy.sparse  # beyond DENSE_MOVES clusters only: kept off the command line's start-up path

    at = np.arange(len(points))[moved]  # the moved points' rows in `points`
    if points.dtype != dtype:  # weighted sums: only the moved rows are converted
        points, at = points[moved].astype(dtype), np.arange(m)
    clusters = np.concatenate([new, old[left]])
    order = np.argsort(clusters, kind="stable")
    indptr = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(np.bincount(clusters, minlength=k), out=indptr[1:])
    columns = np.concatenate([at, at[left]])[order]
    values = np.concatenate([join, -join[left]])[order]
    matrix = scipy.sparse.csr_array((values, columns, indptr), shape=(k, len(points)))
    return matrix @ points.astype(dtype, copy=False), counts


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
        # update the centres move so far that every point is stale on the data we measured;
        # on heavily overlapping clusters they never are (see stale_rows).
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
        for n_moved, sums, counts in in_parallel(self.pool, work, blocks):
            if n_moved:
                moved += n_moved
                self.sums += sums
                net += counts
        self.counts += net
        self.bounded = keep
        if stale is None:
            self.data.norms_made()  # every row went through norms_of
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
        points = data.lloyd_block(block, scratch=True)
        xn2 = data.norms_of(block, points)
        rows = np.arange(len(xn2))
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
            return 0, None, None
        weights = None if self.weights is None else self.weights[block]
        moved = slice(None)
        if len(changed) < len(new):
            moved, old, new = changed, old[changed], new[changed]
            weights = None if weights is None else weights[changed]
        sums, counts = _moves(points, moved, old, new, products.k, weights, data.whole)
        return len(changed), sums, counts.astype(self.counts.dtype, copy=False)

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

        def tie_margin(row_norm):
            return TIE_MARGIN * c * (2 * (row_norm + shift) + c) + 2.0**-20 * 2 * shift * c

        close = np.flatnonzero(gap <= tie_margin(math.sqrt(float(xn2.max()))))
        if not len(close):
            return
        margin = tie_margin(np.sqrt(xn2[close]))
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
            # maximum needs a G x N gather and pass, and proves hardly more points (the lower
            # bounds are the larger term).
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
        return self.farthest_rows(centers, m)[:4]

    def farthest_rows(self, centers: np.ndarray, m: int):
        """farthest's answer, and which rows of the block those points are (ties: the lower row)."""
        far = np.empty(self.data.shape[0], dtype=np.float64)
        for rows in chunks(len(far)):
            far[rows] = sq_distances_to_own(self.data.block(rows), centers, self.labels[rows])
        if self.weights is not None:
            far[self.weights == 0] = -1.0
        order = np.argsort(-far, kind="stable")[:m]
        weights = np.ones(len(order), dtype=np.int64) if self.weights is None else self.weights[order]
        return far[order], self.labels[order], self.data.block(order), weights, order


def update_centers(state: BlockState, centers: np.ndarray) -> tuple[np.ndarray, int]:
    """Means of the clusters; an empty cluster is re-seeded with the point farthest from its centre
    (scikit-learn's rule; with weights, a cluster of total weight 0 counts as empty)."""
    sums, counts = state.sums, state.counts
    empty = np.flatnonzero(counts == 0)
    if not len(empty):  # the usual case: no copies of the K x D sums while the workers wait
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
