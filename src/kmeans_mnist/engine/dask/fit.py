"""K-means on a Dask cluster: the engine's exact iterations, one BlockState per worker.

X is a `dask.array.Array` chunked by rows (or a NumPy array, scattered to the cluster in one
piece per worker: what the command line does). Each worker joins the chunks it holds into one
block of rows, whose prepared rows and `engine.BlockState` (labels, distance bounds, cluster
sums) stay there from one iteration to the next: the number of chunks costs nothing per
iteration. Per iteration only the centres go out, and per worker the cluster sums, counts,
energy and the number of points that changed cluster come back; the bounds skip the points that
cannot change, as in memory. The client only adds up K x D sums.

How calls reach the workers (one Dask actor per worker, called straight from the client, and
ordinary tasks after a lost worker) and what a worker keeps: chunks.py.

Same answers as `engine.fit`: the same centring offset and power-of-two scale as the engine
computes for the whole of X, the same tolerance (from the variance of all of X), the same
empty-cluster rule and the engine's exact labels; from the same initial centres, the same labels
and iterations. Only the seeding differs: k-means++ and k-means|| draw chunk by chunk
(seeding.py).

Faults: a block's state is a cache, never the only copy of anything. Each call checks that the
state it finds is the one it expects (same run, previous iteration); if not (the worker died and
Dask recomputed the chunk elsewhere, or the call moved), it answers LOST and the client sends it
the previous centres, from which the state is rebuilt exactly (labels are a function of the data
and the centres). So a worker lost mid-fit costs one rebuild of the blocks, never a wrong answer.

Workers need kmeans-mnist installed (they import this module to run its tasks).
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph
from threadpoolctl import threadpool_limits

from .. import lloyd as engine
from .. import prepared
from ..lloyd import BlockState, Centers, FitResult, InitProgress, IterationInfo, Prepared
from .chunks import LOST, Block, Chunks, on_block


class _Stats(NamedTuple):
    """What one block sends back after an assignment: small, whatever the block's size."""

    n_changed: int
    sums: np.ndarray  # K x D
    counts: np.ndarray  # K
    energy: float  # inertia of the block's labels against the centres they were assigned to
    column_sums: np.ndarray | None  # D, with norm_sum: the block's share of the variance (tol)
    norm_sum: float


def _step(block: Block, picked, run: int, version: int, centers: Centers, previous: np.ndarray | None = None):
    """Assignment number `version` (from 1) of run `run` against `centers`; the block's _Stats.

    Needs the state after assignment version - 1; without it, answers LOST unless `previous`
    (the centres of that assignment) is given, from which the state is rebuilt.
    """
    if block.run == run and block.version == version:  # this call ran already
        return block.result
    incremental = block.run == run and block.version == version - 1 and version > 1
    if not incremental and version > 1 and previous is None:
        return LOST
    block.version = None
    if incremental:
        n_changed = block.state.assign(centers, block.state.stale_rows(centers))
    else:
        block.run, block.state = run, block.new_state(len(centers.values))
        if version > 1:
            block.state.assign(Centers(previous))
        n_changed = block.state.assign(centers)
    state, data = block.state, block.data
    first = version == 1
    block.result = _Stats(
        n_changed,
        state.sums.copy(),
        state.counts.copy(),
        state.energy(centers.values),
        np.sum(data.column_sums, axis=0, dtype=np.float64) if first else None,
        float(data.xn2.sum()) if first else 0.0,
    )
    block.version = version
    return block.result


def _assigned(block: Block, run: int, version: int, centers: np.ndarray) -> BlockState:
    """The block's state after assignment `version`, made again from `centers` if it is not here."""
    if block.run != run or block.version != version:
        block.version = None
        block.run, block.state = run, block.new_state(len(centers))
        block.state.assign(Centers(centers))
        block.version, block.result = version, None
    return block.state


def _farthest(block: Block, picked, run: int, version: int, centers: np.ndarray, m: int):
    """The block's m points farthest from their own centre (BlockState.farthest), with their rows in X."""
    *farthest, order = _assigned(block, run, version, centers).farthest_rows(centers, m)
    return (*farthest, block.global_rows(order))


def _labels(block: Block, picked, run: int, version: int, centers: np.ndarray) -> np.ndarray:
    """The block's labels after assignment `version`; made again from the centres if not here."""
    return _assigned(block, run, version, centers).labels.copy()


# ---------------------------------------------------------------------- the client's side


def current_client():
    """The dask.distributed client Dask would compute on now (the default client, unless the
    `scheduler` setting says otherwise), or None: then chunks run on threads of this process."""
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)  # a Client's `get` is bound to it
    return client if type(client).__name__ == "Client" else None


def _as_dask(X):
    """X as a checked dask array chunked by rows only (rechunked when its columns are split)."""
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array (samples x features), got {X.ndim}-D")
    if any(math.isnan(size) for size in X.shape):
        raise ValueError("X has chunks of unknown size: call X.compute_chunk_sizes() first")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if X.dtype.kind not in "uifb":
        raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _extremes(rows: list[np.ndarray], origins, picked, step: int):
    """The chunks' share of what _whole_x needs: largest magnitude (floats) or largest and
    smallest value (integers), whether all are finite, and X's rows at multiples of `step`
    among them, with their rows in X."""
    high = low = None
    finite = True
    sample, where = [], []
    for part, origin in zip(rows, origins, strict=True):
        if not len(part):
            continue
        if part.dtype.kind == "f":
            finite = finite and bool(np.isfinite(part).all())
            high = max(high or 0.0, float(np.abs(part).max())) if finite else high
        elif part.dtype.itemsize > 1:
            high = part.max() if high is None else max(high, part.max())
            low = part.min() if low is None else min(low, part.min())
        first = (-origin) % step
        sample.append(part[first::step])
        where.append(np.arange(origin + first, origin + len(part), step))
    return high, low, finite, sample, where


def _whole_x(X, chunks: Chunks | None) -> tuple[Prepared, bool]:
    """The engine's centring offset and power-of-two scale for all of X, as a Prepared of the
    engine's own sample of X's rows: it has X's offset and scale, and their transforms; and
    whether compact rows are multiplied as stored (Prepared's `shift`, decided on that sample as
    the in-memory engine decides on X: the answers are the same either way, a pass over each
    block of the assignment is saved).

    The engine's scale rule is applied to X's extremes, its offset rule to the sample (which
    Prepared takes whole: it holds fewer than 2 x OFFSET_SAMPLE_ROWS rows). A dask array's are
    read where its chunks are (one call per worker), and checked for NaN and infinity.
    """
    step = max(1, X.shape[0] // prepared.OFFSET_SAMPLE_ROWS)
    # NumPy data (checked by engine.check_X) here, a dask array on its workers.
    answers = [_extremes([X], [0], None, step)] if chunks is None else chunks.units(_extremes, step)
    sample = np.concatenate([part for answer in answers for part in answer[3]])
    where = np.concatenate([rows for answer in answers for rows in answer[4]])
    sample = sample[np.argsort(where, kind="stable")]
    if X.dtype.kind == "f":
        if not all(answer[2] for answer in answers):
            raise ValueError("X contains NaN or infinity")
        extremes = np.array([[max(answer[0] or 0.0 for answer in answers)]], dtype=np.float64)
    elif X.dtype.itemsize > 1:
        extremes = np.array(
            [
                [max(a[0] for a in answers if a[0] is not None)],
                [min(a[1] for a in answers if a[1] is not None)],
            ],
            dtype=X.dtype,
        )
    else:
        extremes = np.array([[0], [0]], dtype=X.dtype)
    whole = Prepared(sample, scale=Prepared(extremes).scale)
    return whole, prepared.shifts_well(sample, whole.offset)


def fit(
    X,
    n_clusters: int,
    *,
    init: str | np.ndarray = "k-means++",
    n_init: int = 1,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | np.random.Generator | None = None,
    callback: Callable[[IterationInfo], Any] | None = None,
    progress: Callable[[InitProgress], Any] | None = None,
    verbose: bool = False,
    client=None,
) -> FitResult:
    """engine.fit on a Dask cluster: X a dask array chunked by rows, or a NumPy array to scatter.

    Runs on `client`, else on the current dask.distributed client, else (dask arrays) on threads
    of this process, else (NumPy data) as engine.fit. Parameters and result as engine.fit, plus
    init="k-means||". For a dask array `labels_` is a dask array (in X's row chunks, left on the
    workers); for NumPy data a NumPy array.
    """
    client = client if client is not None else current_client()
    if isinstance(X, np.ndarray) or not hasattr(X, "dask"):
        X = engine.check_X(X)
        if client is None:
            return engine.fit(
                X,
                n_clusters,
                init=init,
                n_init=n_init,
                max_iter=max_iter,
                tol=tol,
                random_state=random_state,
                callback=callback,
                progress=progress,
                verbose=verbose,
            )
    else:
        X = _as_dask(X)
    named = "k-means++" if isinstance(init, str) and init == "k-means||" else init  # k-means|| is ours here
    engine.check_params(X, n_clusters, init=named, n_init=n_init, max_iter=max_iter, tol=tol)
    chunks = Chunks(X, client, uuid.uuid4().hex)
    rng = np.random.default_rng(random_state)
    best = None
    try:
        whole, shift = _whole_x(X, None if chunks.source is not None else chunks)
        chunks.prep = (whole.offset.astype(np.float64) / whole.scale, whole.scale, shift)
        with threadpool_limits(1, user_api="blas") if client is None else contextlib.nullcontext():
            for run in range(1 if engine.is_array(init) else n_init):
                chosen = (
                    None
                    if progress is None
                    else lambda n, run=run: progress(InitProgress(run, n, n_clusters))
                )
                centers = _initial_centers(chunks, whole, init, n_clusters, rng, chosen)
                report = engine._reporter(run, whole, callback, verbose)
                result = _lloyd(chunks, run, centers, max_iter, tol, report)
                if best is None or result.inertia < best.inertia:
                    best = result
    finally:
        chunks.close()
    return FitResult(
        cluster_centers_=whole.restore_centers(best.centers),
        labels_=_labels_array(chunks, best.labels),
        inertia_=prepared.unscaled_sum_of_squares(best.inertia, whole.scale),
        n_iter_=best.n_iter,
        converged_=best.converged,
        n_empty_reseeds_=best.n_reseeds,
        n_features_in_=X.shape[1],
    )


def _labels_array(chunks: Chunks, parts: list) -> np.ndarray | da.Array:
    """The labels of all of X from each unit's (`parts`: (unit, its labels) pairs): NumPy for
    NumPy data, else a dask array in X's row chunks (on a cluster, left on the workers)."""
    if chunks.client is None or chunks.source is not None:
        units = [part for _, part in parts]
        units = units if chunks.client is None else chunks.client.gather(units)
        labels = np.empty(chunks.n, dtype=np.int32)
        for (unit, _), values in zip(parts, units, strict=True):
            labels[np.concatenate([np.arange(chunks.starts[i], chunks.starts[i + 1]) for i in unit])] = values
        return labels if chunks.source is not None else da.from_array(labels, chunks=(tuple(chunks.sizes),))
    # One graph layer slicing each unit's labels back into X's chunks (slicing each chunk as an
    # array of its own and concatenating them grows with the number of chunks).
    units = [
        da.from_delayed(future, shape=(sum(chunks.sizes[i] for i in unit),), dtype=np.int32)
        for unit, future in parts
    ]
    name = f"kmeans-labels-{chunks.token}"
    layer = {}
    for (unit, _), whole in zip(parts, units, strict=True):
        start = 0
        for i in unit:
            layer[(name, i)] = (operator.getitem, (whole.name, 0), slice(start, start + chunks.sizes[i]))
            start += chunks.sizes[i]
    graph = HighLevelGraph.from_collections(name, layer, dependencies=units)
    return da.Array(graph, name, chunks=(tuple(chunks.sizes),), dtype=np.int32)


class _Run(NamedTuple):
    centers: np.ndarray
    labels: list  # (unit, its labels: a future on a cluster, or an array)
    inertia: float
    n_iter: int
    converged: bool
    n_reseeds: int


class _Totals:
    """What engine.update_centers reads of a BlockState, for all of X: the chunks' sums and
    counts added up, and their farthest points, fetched only when a cluster is empty."""

    def __init__(self, stats: list[_Stats], farthest: Callable[[np.ndarray, int], tuple]):
        self.sums = np.sum([s.sums for s in stats], axis=0)
        self.counts = np.sum([s.counts for s in stats], axis=0)
        self.farthest = farthest


def _merge_farthest(answers: list[tuple], m: int) -> tuple:
    """The m farthest points of X from each block's m farthest (ties to the lower row of X, as
    the engine: each block's own are its farthest with ties to its lower rows, which are in X's order)."""
    merged = [np.concatenate(parts) for parts in zip(*answers, strict=True)]
    order = np.lexsort((merged[-1], -merged[0]))[:m]
    return tuple(values[order] for values in merged[:-1])


def _assign(chunks: Chunks, run: int, version: int, current: Centers, previous) -> list[_Stats]:
    """Assignment `version` on every block; a block whose state was lost rebuilds it from `previous`."""
    _ = current.half_gaps  # computed once here, not on every worker
    return chunks.units(_step, run, version, current, rebuild={"previous": previous})


def _lloyd(chunks: Chunks, run: int, centers: np.ndarray, max_iter: int, tol: float, report) -> _Run:
    """engine.lloyd over the workers' blocks: the same iterations, each block's state kept on its worker."""
    current = Centers(centers.copy())
    previous = None  # the centres of the assignment before: what a lost state is rebuilt from
    strict = converged = False
    reseeds = 0
    tol_abs = 0.0
    for i in range(max_iter):
        started = time.perf_counter()
        version = i + 1
        stats = _assign(chunks, run, version, current, previous)
        if i == 0:
            tol_abs = _tolerance(stats, chunks.n, tol)
        n_changed = sum(s.n_changed for s in stats)
        inertia = sum(s.energy for s in stats)

        def farthest(values: np.ndarray, m: int, version=version) -> tuple:
            return _merge_farthest(chunks.units(_farthest, run, version, values, m), m)

        new_centers, reseeded = engine.update_centers(_Totals(stats, farthest), current.values)
        reseeds += reseeded
        previous = current.values
        current, shift_total = engine.next_centers(current, new_centers)
        if report:
            seconds = time.perf_counter() - started
            report(IterationInfo(0, i + 1, inertia, n_changed, shift_total, new_centers, seconds))
        converged, strict = engine.stopping(i, n_changed, shift_total, tol_abs)
        if converged:
            break
    labelled = previous  # the centres the labels were assigned to
    if not strict:
        # Labels must match the final centres (as scikit-learn's last E-step).
        version += 1
        stats = _assign(chunks, run, version, current, previous)
        labelled = current.values
    inertia = sum(s.energy for s in stats)
    return _Run(
        current.values, _label_parts(chunks, run, version, labelled), inertia, i + 1, converged, reseeds
    )


def _tolerance(stats: list[_Stats], n: int, tol: float) -> float:
    """engine.Prepared.tol_abs for all of X: tol x the mean per-feature variance."""
    if tol == 0:
        return 0.0
    column_sums = np.sum([s.column_sums for s in stats], axis=0)
    return prepared.variance_tolerance(tol, sum(s.norm_sum for s in stats), column_sums, n)


def _label_parts(chunks: Chunks, run: int, version: int, centers: np.ndarray) -> list:
    """Each unit's labels, left where they are (futures on a cluster). Waited for, so that they
    are read from the blocks before these are dropped; recomputable from `centers` after that."""
    if chunks.client is None:
        return list(zip(chunks.unit_list, chunks.units(_labels, run, version, centers), strict=True))
    from distributed import wait

    futures = [
        chunks.client.submit(
            on_block,
            [chunks.parts[i] for i in unit],
            chunks.key(unit),
            chunks.prep,
            chunks.origins(unit),
            _labels,
            None,
            (run, version, centers),
            {},
            pure=False,
            **chunks.placement(unit),
        )
        for unit in chunks.unit_list
    ]
    wait(futures)
    return list(zip(chunks.unit_list, futures, strict=True))


# ---------------------------------------------------------------------- seeding


def _initial_centers(chunks: Chunks, whole: Prepared, init, k: int, rng, chosen) -> np.ndarray:
    """K x D float64 starting centres in the prepared space (engine.initial_centers over chunks)."""
    from . import seeding as dask_seeding

    if engine.is_array(init):
        centers = whole.transform_centers(np.asarray(init, dtype=np.float64))
    elif init == "random":
        centers = dask_seeding.random_rows(chunks, k, rng)
    elif init == "k-means||":
        centers = dask_seeding.kmeans_parallel(chunks, k, rng)
    else:
        return dask_seeding.kmeans_plusplus(chunks, k, rng, chosen)
    if chosen is not None:
        chosen(k)
    return centers


# ---------------------------------------------------------------------- new data, fitted centres


def predict(X, centers: np.ndarray):
    """Nearest centre of each row (a lazy dask array of int32, X's row chunks)."""
    meta = np.empty((0,), dtype=np.int32)
    return _as_dask(X).map_blocks(_predict_block, centers, dtype=np.int32, drop_axis=1, meta=meta)


def transform(X, centers: np.ndarray):
    """Distances to every centre (a lazy dask array, N x K float64, X's row chunks)."""
    X = _as_dask(X)
    meta = np.empty((0, 0), dtype=np.float64)
    return X.map_blocks(
        _distances_block, centers, dtype=np.float64, chunks=(X.chunks[0], (len(centers),)), meta=meta
    )


def inertia(X, centers: np.ndarray) -> float:
    """Sum of squared distances of the rows of X to their nearest centre (computed)."""
    meta = np.empty((0,), dtype=np.float64)
    per_chunk = _as_dask(X).map_blocks(
        _inertia_block, centers, dtype=np.float64, drop_axis=1, chunks=(1,), meta=meta
    )
    return float(per_chunk.sum().compute())


def _predict_block(block: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return engine.labels_inertia(block, centers)[0]


def _distances_block(block: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return engine.distances(block, centers)


def _inertia_block(block: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return np.array([engine.labels_inertia(block, centers)[1]])
