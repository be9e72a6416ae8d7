"""K-means on a Dask cluster: the engine's exact iterations, one BlockState per chunk on its worker.

X is a `dask.array.Array` chunked by rows (or a NumPy array, scattered to the cluster in row
chunks: what the command line does). Each chunk's prepared rows and its `engine.BlockState`
(labels, distance bounds, cluster sums) live on the worker that holds the chunk, from one
iteration to the next. Per iteration only the centres go out, and per chunk the cluster sums,
counts, energy and the number of points that changed cluster come back; the bounds skip the
points that cannot change, as in memory. The client only adds up K x D sums.

Calls reach the chunks through one Dask actor per worker (`_Host`), straight from the client:
a round trip of ~3 ms, where a task per chunk through the scheduler costs ~15 ms, which on
MNIST (~6 ms of work per iteration) was most of the time. When an actor is lost with its worker,
that call and the next go through ordinary tasks, which Dask can recompute anywhere.

Same answers as `engine.fit`: the same centring offset and power-of-two scale as the engine
computes for the whole of X, the same tolerance (from the variance of all of X), the same
empty-cluster rule and the engine's exact labels; from the same initial centres, the same labels
and iterations. Only the seeding differs: k-means++ and k-means|| draw chunk by chunk
(dask_seeding.py).

Faults: a chunk's state is a cache, never the only copy of anything. Each call checks that the
state it finds is the one it expects (same run, previous iteration); if not (the worker died and
Dask recomputed the chunk elsewhere, or the call moved), it answers LOST and the client sends it
the previous centres, from which the state is rebuilt exactly (labels are a function of the data
and the centres). So a worker lost mid-fit costs one rebuild of its chunks, never a wrong answer.
A call to a lost actor is made again as tasks (NumPy data scattered from this process is sent
again when a worker died with it), then actors are set up on the workers left.

Workers need kmeans-mnist installed (they import this module to run its tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from . import engine
from .engine import BlockState, Centers, FitResult, InitProgress, IterationInfo, Prepared

LOST = "lost"  # a task's answer when the state it needs is not on its worker (rebuild on request)
RESEND_TRIES = 3  # how often chunks of scattered NumPy data are sent again after a lost worker


# ---------------------------------------------------------------------- what a worker keeps


_CHUNKS: dict[tuple[str, int], _Chunk] = {}  # (fit token, chunk index) -> its state on this worker


class _Chunk:
    """One chunk as a worker keeps it between tasks: prepared rows, one run's BlockState, seeding.

    `version` counts the assignments the state has been through in run `run` (None while a task
    changes it, so a task that died half-way leaves a state nobody trusts).
    """

    def __init__(self, rows: np.ndarray, prep: tuple[np.ndarray, float]):
        offset, scale = prep
        self.data = Prepared(rows, offset=offset, scale=scale)
        self.state: BlockState | None = None
        self.run: int | None = None
        self.version: int | None = None
        self.result = None  # the answer of the last step, for a task that runs twice
        self.closest: np.ndarray | None = None  # seeding: squared distance to the nearest centre so far
        self.trials: np.ndarray | None = None  # seeding: the same against each candidate of the round
        self.n_chosen = 0  # seeding: centres folded into `closest`


def _chunk(rows: np.ndarray, key: tuple[str, int], prep) -> _Chunk:
    chunk = _CHUNKS.get(key)
    if chunk is None:
        chunk = _CHUNKS[key] = _Chunk(rows, prep)
    return chunk


def _forget(token: str) -> None:
    """Drop every chunk state of one fit (runs on each worker when the fit ends)."""
    for key in [key for key in _CHUNKS if key[0] == token]:
        del _CHUNKS[key]


class _Stats(NamedTuple):
    """What one chunk sends back after an assignment: small, whatever the chunk's size."""

    n_changed: int
    sums: np.ndarray  # K x D
    counts: np.ndarray  # K
    energy: float  # inertia of the chunk's labels against the centres they were assigned to
    column_sums: np.ndarray | None  # D, with norm_sum: the chunk's share of the variance (tol)
    norm_sum: float


def _step(rows, key, prep, run: int, version: int, centers: Centers, previous: np.ndarray | None = None):
    """Assignment number `version` (from 1) of run `run` against `centers`; the chunk's _Stats.

    Needs the state after assignment version - 1; without it, answers LOST unless `previous`
    (the centres of that assignment) is given, from which the state is rebuilt.
    """
    chunk = _chunk(rows, key, prep)
    if chunk.run == run and chunk.version == version:  # this task ran already
        return chunk.result
    incremental = chunk.run == run and chunk.version == version - 1 and version > 1
    if not incremental and version > 1 and previous is None:
        return LOST
    chunk.version = None
    if incremental:
        n_changed = chunk.state.assign(centers, chunk.state.stale_rows(centers))
    else:
        chunk.run, chunk.state = run, BlockState(chunk.data, len(centers.values))
        if version > 1:
            chunk.state.assign(Centers(previous))
        n_changed = chunk.state.assign(centers)
    state, data = chunk.state, chunk.data
    first = version == 1
    chunk.result = _Stats(
        n_changed,
        state.sums.copy(),
        state.counts.copy(),
        state.energy(centers.values),
        np.sum(data.column_sums, axis=0, dtype=np.float64) if first else None,
        float(data.xn2.sum()) if first else 0.0,
    )
    chunk.version = version
    return chunk.result


def _assigned(rows, key, prep, run: int, version: int, centers: np.ndarray) -> BlockState:
    """The chunk's state after assignment `version`, made again from `centers` if it is not here."""
    chunk = _chunk(rows, key, prep)
    if chunk.run != run or chunk.version != version:
        chunk.version = None
        chunk.run, chunk.state = run, BlockState(chunk.data, len(centers))
        chunk.state.assign(Centers(centers))
        chunk.version, chunk.result = version, None
    return chunk.state


def _farthest(rows, key, prep, run: int, version: int, centers: np.ndarray, m: int):
    """The chunk's m points farthest from their own centre (BlockState.farthest)."""
    return _assigned(rows, key, prep, run, version, centers).farthest(centers, m)


def _labels(rows, key, prep, run: int, version: int, centers: np.ndarray) -> np.ndarray:
    """The chunk's labels after assignment `version`; recomputable after the fit from the centres."""
    chunk = _CHUNKS.get(key)
    if chunk is not None and chunk.run == run and chunk.version == version:
        return chunk.state.labels.copy()
    state = BlockState(Prepared(rows, offset=prep[0], scale=prep[1]), len(centers))
    state.assign(Centers(centers))
    return state.labels


class _Host:
    """A Dask actor, one per worker, given the chunks that worker holds: runs chunk functions on
    them (on as many threads as the worker has) when the client calls `run`, with no task and no
    scheduler in between. Holds no state of its own: the chunks' states are in _CHUNKS."""

    def __init__(self, *rows: np.ndarray):
        from distributed import get_worker

        self.rows = rows
        self.pool = ThreadPoolExecutor(max(1, get_worker().state.nthreads))

    async def run(self, fn, calls: list[tuple[int, tuple]], kwargs: dict) -> list:
        """fn(rows of chunk `slot`, *call, **kwargs) for each (slot, call), in order."""
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(self.pool, functools.partial(fn, self.rows[slot], *call, **kwargs))
            for slot, call in calls
        ]
        return await asyncio.gather(*jobs)


# ---------------------------------------------------------------------- the client's side


def current_client():
    """The dask.distributed client Dask would compute on now (the default client, unless the
    `scheduler` setting says otherwise), or None: then chunks run on threads of this process."""
    from dask.base import get_scheduler

    client = getattr(get_scheduler(), "__self__", None)  # a Client's `get` is bound to it
    return client if type(client).__name__ == "Client" else None


class _Chunks:
    """X's row chunks and how tasks reach them: futures on a Dask cluster, or arrays here.

    `map(fn, *args, only=..., each=..., **kwargs)` runs fn(chunk, key, prep, *args, *each[n],
    **kwargs) for each chunk (or the chunks listed in `only`) and returns the answers in order.
    """

    def __init__(self, X, client, token: str, prep: tuple[np.ndarray, float]):
        self.client, self.token, self.prep = client, token, prep
        self.source = None  # NumPy data scattered from here: sent again if a worker dies with it
        if isinstance(X, np.ndarray):
            self.source = X
            self.sizes = _split(X.shape[0], _n_parts(client))
        else:
            self.sizes = list(X.chunks[0])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.keys = [(token, i) for i in range(len(self.sizes))]
        self.pool = ThreadPoolExecutor(engine.THREADS) if client is None else None
        self.homes: dict[int, str] = {}  # chunk -> address of the worker that holds its state
        self.hosts: dict[str, Any] = {}  # worker address -> its _Host actor (on a cluster)
        self.slots: dict[int, tuple[str, int]] = {}  # chunk -> (its worker, its place in the host)
        self._actors: list = []  # the futures that keep the actors alive
        if self.source is not None:
            self.parts = self._scatter(range(len(self.sizes)))
        elif client is not None:
            from distributed import futures_of

            X = client.persist(X)
            by_key = {future.key: future for future in futures_of(X)}
            self.parts = [by_key[key] for key in dask.core.flatten(X.__dask_keys__())]
        else:
            self.parts = list(dask.compute(*X.to_delayed().ravel().tolist()))
        if client is not None:
            self._start_hosts()

    @property
    def n(self) -> int:
        return int(self.starts[-1])

    def _scatter(self, indices) -> list:
        pieces = [self.source[self.starts[i] : self.starts[i + 1]] for i in indices]
        return self.client.scatter(pieces, hash=False)

    def map(self, fn, *args, only=None, each=None, **kwargs) -> list:
        indices = list(range(len(self.parts)) if only is None else only)
        extra = each or [()] * len(indices)
        calls = [(self.keys[i], self.prep, *args, *more) for i, more in zip(indices, extra, strict=True)]
        if self.client is None:
            work = lambda n: fn(self.parts[indices[n]], *calls[n], **kwargs)  # noqa: E731
            return list(self.pool.map(work, range(len(indices))))
        if self.hosts:
            try:
                return self._by_hosts(fn, indices, calls, kwargs)
            except Exception:  # a worker lost with its actor: tasks recover (and rerun what ran)
                self._stop_hosts()
                answers = self._by_tasks(fn, indices, calls, kwargs)
                with contextlib.suppress(Exception):
                    self._start_hosts()
                return answers
        return self._by_tasks(fn, indices, calls, kwargs)

    def _by_hosts(self, fn, indices: list[int], calls: list[tuple], kwargs: dict) -> list:
        """The calls through each worker's _Host actor, all workers at once."""
        by_worker: dict[str, list[int]] = {}
        for n, i in enumerate(indices):
            by_worker.setdefault(self.slots[i][0], []).append(n)
        pending = [
            (
                members,
                self.hosts[address].run(fn, [(self.slots[indices[n]][1], calls[n]) for n in members], kwargs),
            )
            for address, members in by_worker.items()
        ]
        answers: list = [None] * len(indices)
        for members, future in pending:
            for n, answer in zip(members, future.result(), strict=True):
                answers[n] = answer
        return answers

    def _start_hosts(self) -> None:
        """One _Host actor per worker holding chunks, given those chunks (no data moves)."""
        from distributed import wait

        wait(self.parts)
        held = self.client.who_has(self.parts)
        by_worker: dict[str, list[int]] = {}
        for i, part in enumerate(self.parts):
            by_worker.setdefault(held[part.key][0], []).append(i)
        self._actors = [
            self.client.submit(
                _Host, *[self.parts[i] for i in members], actor=True, pure=False, workers=[address]
            )
            for address, members in by_worker.items()
        ]
        self.hosts = {
            address: future.result() for address, future in zip(by_worker, self._actors, strict=True)
        }
        self.slots = {
            i: (address, slot) for address, members in by_worker.items() for slot, i in enumerate(members)
        }
        self.homes.update({i: address for i, (address, _) in self.slots.items()})

    def _stop_hosts(self) -> None:
        self.hosts, self.slots, self._actors = {}, {}, []

    def _by_tasks(self, fn, indices: list[int], calls: list[tuple], kwargs: dict) -> list:
        """The calls as one task per chunk through the scheduler (sent again where a worker died
        with chunks scattered from here)."""
        for attempt in range(RESEND_TRIES + 1):
            futures = [
                self.client.submit(_at_home, fn, self.parts[i], *call, pure=False, **kwargs, **self._home(i))
                for i, call in zip(indices, calls, strict=True)
            ]
            try:
                answers = self.client.gather(futures)
            except Exception:
                lost = [i for i in indices if self.parts[i].status != "finished"]
                if self.source is None or not lost or attempt == RESEND_TRIES:
                    raise
                # A worker died with chunks scattered from here: send them again (states rebuild).
                for i, part in zip(lost, self._scatter(lost), strict=True):
                    self.parts[i] = part
                continue
            for i, (address, _) in zip(indices, answers, strict=True):
                self.homes[i] = address
            return [answer for _, answer in answers]
        raise AssertionError("unreachable")

    def _home(self, i: int) -> dict:
        """Run chunk i's task where its state is (the worker that answered last), or, if that
        worker is gone, anywhere: a loose restriction. Without it, a chunk copied to a second
        worker would see its tasks alternate between the two and rebuild its state each time."""
        home = self.homes.get(i)
        return {} if home is None else {"workers": [home], "allow_other_workers": True}

    def again(self, answers: list, fn, *args, only=None, each=None, rebuild: dict, **kwargs) -> list:
        """`answers` of map(fn, ...) with each LOST one asked again, given `rebuild` arguments."""
        indices = list(range(len(self.parts)) if only is None else only)
        lost = [n for n, answer in enumerate(answers) if isinstance(answer, str) and answer == LOST]
        if lost:
            redone = self.map(
                fn,
                *args,
                only=[indices[n] for n in lost],
                each=[each[n] for n in lost] if each else None,
                **kwargs,
                **rebuild,
            )
            for n, answer in zip(lost, redone, strict=True):
                answers[n] = answer
        return answers

    def close(self) -> None:
        """Drop the chunks' states on every worker (or here)."""
        if self.client is None:
            _forget(self.token)
            self.pool.shutdown()
        else:
            self._stop_hosts()
            with contextlib.suppress(Exception):  # a cluster already gone keeps nothing of ours
                self.client.run(_forget, self.token)


def _at_home(fn, *args, **kwargs):
    """fn's answer, with the address of the worker that gave it (where the chunk's state now is)."""
    from distributed import get_worker

    return get_worker().address, fn(*args, **kwargs)


def _n_parts(client) -> int:
    """How many chunks NumPy data is cut into: one per worker thread of the cluster."""
    return max(1, sum(client.nthreads().values()))


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [len(part) for part in np.array_split(np.arange(n), parts)]


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


def _whole_x(X, client) -> Prepared:
    """The engine's centring offset and power-of-two scale for all of X, as a Prepared of the
    engine's own sample of X's rows: it has X's offset and scale, and their transforms.

    The engine's scale rule is applied to X's extremes, its offset rule to the sample (which
    Prepared takes whole: it holds fewer than 2 x OFFSET_SAMPLE_ROWS rows). Dask data is checked
    for NaN and infinity in the same pass.
    """
    sample = X[:: max(1, X.shape[0] // engine.OFFSET_SAMPLE_ROWS)]
    if X.dtype.kind == "f":
        wanted = (abs(X).max(), da.isfinite(X).all() if isinstance(X, da.Array) else True, sample)
    elif X.dtype.itemsize > 1:
        wanted = (X.max(), X.min(), sample)
    else:
        wanted = (0, 0, sample)
    if isinstance(X, da.Array):
        wanted = client.gather(client.compute(wanted)) if client is not None else dask.compute(*wanted)
    high, low, sample = wanted
    if X.dtype.kind == "f":
        if not low:
            raise ValueError("X contains NaN or infinity")
        extremes = np.array([[high]], dtype=np.float64)
    else:
        extremes = np.array([[high], [low]], dtype=X.dtype)
    return Prepared(np.asarray(sample), scale=Prepared(extremes).scale)


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
    whole = _whole_x(X, client)
    chunks = _Chunks(
        X, client, uuid.uuid4().hex, (whole.offset.astype(np.float64) / whole.scale, whole.scale)
    )
    rng = np.random.default_rng(random_state)
    best = None
    try:
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
        inertia_=best.inertia / whole.scale**2,
        n_iter_=best.n_iter,
        converged_=best.converged,
        n_empty_reseeds_=best.n_reseeds,
        n_features_in_=X.shape[1],
    )


def _labels_array(chunks: _Chunks, parts: list):
    """The labels of all chunks: NumPy for NumPy data, else a dask array over the chunks' labels."""
    if chunks.source is not None:
        return np.concatenate(chunks.client.gather(parts))
    if chunks.client is None:
        return da.concatenate([da.from_array(part, chunks=-1) for part in parts])
    return da.concatenate(
        [
            da.from_delayed(part, shape=(size,), dtype=np.int32)
            for part, size in zip(parts, chunks.sizes, strict=True)
        ]
    )


class _Run(NamedTuple):
    centers: np.ndarray
    labels: list  # per chunk: futures (on a cluster) or arrays
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
    """The m farthest points of X from each chunk's m farthest (ties to the lower row, as the engine)."""
    merged = [np.concatenate(parts) for parts in zip(*answers, strict=True)]
    order = np.argsort(-merged[0], kind="stable")[:m]  # chunks in row order: stable = lower row first
    return tuple(values[order] for values in merged)


def _assign(chunks: _Chunks, run: int, version: int, current: Centers, previous) -> list[_Stats]:
    """Assignment `version` on every chunk; a chunk whose state was lost rebuilds it from `previous`."""
    _ = current.half_gaps  # computed once here, not on every worker
    stats = chunks.map(_step, run, version, current)
    return chunks.again(stats, _step, run, version, current, rebuild={"previous": previous})


def _lloyd(chunks: _Chunks, run: int, centers: np.ndarray, max_iter: int, tol: float, report) -> _Run:
    """engine.lloyd over the chunks: the same iterations, each chunk's state kept on its worker."""
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
            return _merge_farthest(chunks.map(_farthest, run, version, values, m), m)

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
    column_means = np.sum([s.column_sums for s in stats], axis=0) / n
    d = len(column_means)
    return tol * (sum(s.norm_sum for s in stats) / n - float(column_means @ column_means)) / d


def _label_parts(chunks: _Chunks, run: int, version: int, centers: np.ndarray) -> list:
    """Each chunk's labels, left where they are (futures on a cluster). Waited for, so that they
    are read from the states before these are dropped; recomputable from `centers` after that."""
    if chunks.client is None:
        return chunks.map(_labels, run, version, centers)
    from distributed import wait

    futures = [
        chunks.client.submit(
            _labels, part, key, chunks.prep, run, version, centers, pure=False, **chunks._home(i)
        )
        for i, (part, key) in enumerate(zip(chunks.parts, chunks.keys, strict=True))
    ]
    wait(futures)
    return futures


# ---------------------------------------------------------------------- seeding


def _initial_centers(chunks: _Chunks, whole: Prepared, init, k: int, rng, chosen) -> np.ndarray:
    """K x D float64 starting centres in the prepared space (engine.initial_centers over chunks)."""
    from . import dask_seeding

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
