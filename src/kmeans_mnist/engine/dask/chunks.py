"""How the Dask engine's calls reach X's row chunks, and what a worker keeps of them.

A worker joins the chunks it holds into one block of rows (a `Block`: one `Prepared`, one
`engine.BlockState`, the seeding's distances), so that an iteration costs one call and one pass
per worker whatever the number of chunks: a chunk of its own per state cost ~1.3 ms of upkeep
an iteration (K x D sums sent back, a thread hand-over, small matrix products), and arrays come
with hundreds of chunks (zarr, HDF5, `from_array`'s defaults). The blocks live in BLOCKS from one
call to the next: a cache, never the only copy of anything, since every state can be rebuilt
from the data and the centres (a call that misses it answers LOST).

`Chunks` is the client's side: X's chunks as futures on a cluster (or arrays on threads here),
grouped into units, each unit one block on one worker. On a cluster each worker gets one actor
(`Host`) holding its chunks as one unit, which the client calls directly, with no task and no
scheduler in between: a round trip of ~3 ms, where a task costs ~15 ms. When a worker dies with
its actor, that call is made again as ordinary tasks, one unit per chunk, which Dask can run
anywhere (NumPy data scattered from here is sent again), and actors are set up again on the
workers left (new units: their blocks are rebuilt from the centres, as after any loss).

A unit function runs as fn(block, picked, *args, **kwargs), `picked` listing the chunks asked
about as (place in the block, extra arguments of that chunk): per-chunk answers come back as a
list in that order (`Chunks.each`), whole-block answers as one value (`Chunks.units`). Before
X's offset and scale are known (`Chunks.prep` None), there is no block yet and calls get the
chunks' rows as they are (X's extremes and sample are read so, one call per worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import numpy as np

from .. import prepared
from ..lloyd import BlockState, Prepared

LOST = "lost"  # a call's answer when the state it needs is not on its worker (rebuild on request)
RESEND_TRIES = 3  # how often chunks of scattered NumPy data are sent again after a lost worker


# ---------------------------------------------------------------------- what a worker keeps


BLOCKS: dict[tuple[str, tuple[int, ...]], Block] = {}  # (fit token, its chunks) -> their block


class Block:
    """The chunks of one unit as a worker keeps them between calls, joined into one block of
    rows: prepared rows, one run's BlockState, the seeding's distances.

    `edges[p]` is where the unit's p-th chunk starts in the block, `origins[p]` where it starts
    in X. `version` counts the assignments the state has been through in run `run` (None while a
    call changes it, so a call that died half-way leaves a state nobody trusts).
    """

    def __init__(self, rows: list[np.ndarray], prep: tuple[np.ndarray, float, bool], origins, pool=None):
        offset, scale, shift = prep
        # Joined once: Prepared then keeps small whole numbers as they are (the joined copy) and
        # makes one float32 copy of anything else (the joined copy is then dropped here).
        joined = rows[0] if len(rows) == 1 else np.concatenate(rows)
        self.data = Prepared(joined, offset=offset, scale=scale, shift=shift)
        self.edges = np.concatenate([[0], np.cumsum([len(part) for part in rows])]).astype(np.int64)
        self.origins = np.asarray(origins, dtype=np.int64)
        self.pool = pool  # worker threads for the passes over the block (None: this thread)
        self.state: BlockState | None = None
        self.run: int | None = None
        self.version: int | None = None
        self.result = None  # the answer of the last step, for a call that runs twice
        self.closest: np.ndarray | None = None  # seeding: squared distance to the nearest centre so far
        self.trials: np.ndarray | None = None  # seeding: the same against each candidate of the round
        self.n_chosen = 0  # seeding: centres folded into `closest`

    def rows_of(self, place: int) -> slice:
        """The rows of the unit's chunk number `place` in the block."""
        return slice(int(self.edges[place]), int(self.edges[place + 1]))

    def new_state(self, k: int) -> BlockState:
        return BlockState(self.data, k, self.pool)

    def global_rows(self, local: np.ndarray) -> np.ndarray:
        """Rows of X of the block's rows `local`."""
        place = np.searchsorted(self.edges, local, side="right") - 1
        return self.origins[place] + (local - self.edges[place])


def per_chunk_sums(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Float64 sums of `values` (rows, or rows x columns) over each chunk's rows (`edges`)."""
    out = np.zeros((len(edges) - 1, *values.shape[1:]), dtype=np.float64)
    filled = np.flatnonzero(np.diff(edges) > 0)  # reduceat gives an empty range its first row
    if len(filled):
        out[filled] = np.add.reduceat(values, edges[filled], axis=0, dtype=np.float64)
    return out


def on_block(rows: list, key: tuple, prep, origins, fn, picked, args, kwargs, pool=None):
    """fn(the unit's block, picked, *args, **kwargs): the block made (rows joined) on first use.
    Without `prep` (X's offset and scale not known yet): fn(the chunks' rows as they are, where
    they start in X, picked, *args, **kwargs)."""
    if prep is None:
        return fn(rows, origins, picked, *args, **kwargs)
    block = BLOCKS.get(key)
    if block is None:
        block = BLOCKS[key] = Block(rows, prep, origins, pool)
    return fn(block, picked, *args, **kwargs)


def forget(token: str, keep: frozenset = frozenset()) -> None:
    """Drop every block of one fit but those of the units in `keep` (on each worker when the fit
    ends, and when the units change: blocks of the old units would only take memory)."""
    for key in [key for key in BLOCKS if key[0] == token and key[1] not in keep]:
        del BLOCKS[key]


class Host:
    """A Dask actor, one per worker, given the chunks that worker holds: one unit. Runs unit
    functions on their block when the client calls `run`, with no task and no scheduler in
    between; the block's passes use as many threads as the worker has. Holds no state of its
    own: the block is in BLOCKS."""

    def __init__(self, key: tuple, origins, *rows: np.ndarray):
        from distributed import get_worker

        self.key, self.origins, self.rows = key, origins, list(rows)
        threads = max(1, get_worker().state.nthreads)
        self.caller = ThreadPoolExecutor(1)  # the call itself: it hands the block's passes to `pool`
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    async def run(self, message: bytes) -> bytes:
        """on_block(.., fn, picked, args, kwargs) of the pickled (fn, picked, args, kwargs, prep),
        answered pickled."""
        fn, picked, args, kwargs, prep = pickle.loads(message)
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(
            self.caller,
            lambda: on_block(self.rows, self.key, prep, self.origins, fn, picked, args, kwargs, self.pool),
        )
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)


# ---------------------------------------------------------------------- the client's side


class Chunks:
    """X's row chunks, their units and how calls reach them: futures on a Dask cluster, or arrays here.

    `each(fn, *args, only=..., each=..., rebuild=..., **kwargs)` runs the unit function fn on the
    units holding the chunks asked about (all, or those in `only`, with `each[n]` the extra
    arguments of the n-th) and returns one answer per chunk, in order; `units(...)` returns one
    answer per unit. Units that answer LOST are asked again with the `rebuild` arguments.
    """

    def __init__(self, X, client, token: str):
        self.client, self.token = client, token
        # X's offset, scale and whether its compact rows are multiplied as stored: set once known
        self.prep: tuple[np.ndarray, float, bool] | None = None
        self.source = None  # NumPy data scattered from here: sent again if a worker dies with it
        if isinstance(X, np.ndarray):
            self.source = X
            self.sizes, self.targets = split_by_threads(X.shape[0], client.nthreads())
        else:
            self.sizes, self.targets = list(X.chunks[0]), None
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.pool = ThreadPoolExecutor(prepared.THREADS) if client is None else None
        self.homes: dict[int, str] = {}  # chunk -> address of the worker that holds its state
        self.hosts: dict[tuple, Any] = {}  # unit -> its Host actor (on a cluster)
        self.unit_homes: dict[tuple, str] = {}  # unit -> its worker (actors' units)
        self._actors: list = []  # the futures that keep the actors alive
        self.hosts_answered = False  # whether an actor call has come back in this fit
        self.layout = 0  # counts the changes of units (a lost unit's chunks may then be elsewhere)
        self._single_units()
        if self.source is not None:
            self.parts = self._scatter(range(len(self.sizes)), self.targets)
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

    def _set_units(self, units: list[tuple[int, ...]]) -> None:
        self.unit_list = units
        self.unit_of = {i: (u, place) for u, unit in enumerate(units) for place, i in enumerate(unit)}
        self.layout += 1

    def _single_units(self) -> None:
        """One unit per chunk: on threads here, and as tasks (which Dask may run anywhere)."""
        self._set_units([(i,) for i in range(len(self.sizes))])

    def key(self, unit: tuple[int, ...]) -> tuple:
        return (self.token, unit)

    def _scatter(self, indices, targets=None) -> list:
        pieces = [self.source[self.starts[i] : self.starts[i + 1]] for i in indices]
        if targets is None:
            return self.client.scatter(pieces, hash=False)
        return [  # a piece per worker: its unit is then that piece, held once
            self.client.scatter(piece, hash=False, workers=[targets[i]])
            for i, piece in zip(indices, pieces, strict=True)
        ]

    # ------------------------------------------------------------------ calls

    def each(self, fn, *args, only=None, each=None, rebuild: dict | None = None, **kwargs) -> list:
        """fn's per-chunk answers for the chunks in `only` (all by default), in that order."""
        indices = list(range(len(self.sizes)) if only is None else only)
        extra = list(each) if each is not None else [()] * len(indices)
        _, asked, answers = self._call(fn, indices, extra, args, kwargs)
        by_chunk: dict[int, Any] = {}
        lost: set[int] = set()
        for (_, members), answer in zip(asked, answers, strict=True):
            if isinstance(answer, str) and answer == LOST:
                lost.update(members)
            else:
                by_chunk.update(zip(members, answer, strict=True))
        if lost and rebuild is not None:
            again = [n for n, i in enumerate(indices) if i in lost]
            redone = self.each(
                fn,
                *args,
                only=[indices[n] for n in again],
                each=[extra[n] for n in again],
                **kwargs,
                **rebuild,
            )
            by_chunk.update(zip((indices[n] for n in again), redone, strict=True))
        return [by_chunk.get(i, LOST) for i in indices]

    def units(self, fn, *args, rebuild: dict | None = None, **kwargs) -> list:
        """fn's answer of every unit (units of all chunks, so every row of X counts once)."""
        indices = list(range(len(self.sizes)))
        layout, asked, answers = self._call(fn, indices, [()] * len(indices), args, kwargs)
        lost = [n for n, answer in enumerate(answers) if isinstance(answer, str) and answer == LOST]
        if not lost or rebuild is None:
            return answers
        if self.layout != layout:  # units changed (a worker was lost): ask every unit again
            return self.units(fn, *args, **kwargs, **rebuild)
        members = [i for n in lost for i in asked[n][1]]
        again, _, redone = self._call(fn, members, [()] * len(members), args, {**kwargs, **rebuild})
        if again != layout:  # lost again meanwhile
            return self.units(fn, *args, **kwargs, **rebuild)
        for n, answer in zip(lost, redone, strict=True):
            answers[n] = answer
        return answers

    def _call(self, fn, indices: list[int], extra: list[tuple], args: tuple, kwargs: dict):
        """(layout, [(unit, its chunks asked)], answers): fn on each unit holding chunks asked."""
        if self.client is not None and self.hosts:
            layout = self.layout
            asked, picked = self._picked(indices, extra)
            try:
                answers = self._by_hosts(fn, asked, picked, args, kwargs)
                self.hosts_answered = True
                return layout, asked, answers
            except Exception:  # a worker lost with its actor: tasks recover (and rerun what ran)
                self._stop_hosts()
                result = self._tasks_call(fn, indices, extra, args, kwargs)
                if self.hosts_answered:  # actors worked here: set them up on the workers left
                    with contextlib.suppress(Exception):
                        self._start_hosts()
                        self.client.run(forget, self.token, frozenset(self.hosts))
                return result  # else (workers this client cannot reach directly): tasks only
        return self._tasks_call(fn, indices, extra, args, kwargs)

    def _tasks_call(self, fn, indices, extra, args, kwargs):
        layout = self.layout
        asked, picked = self._picked(indices, extra)
        if self.client is None:
            work = lambda n: self._here(fn, asked[n][0], picked[n], args, kwargs)  # noqa: E731
            return layout, asked, list(self.pool.map(work, range(len(asked))))
        return layout, asked, self._by_tasks(fn, asked, picked, args, kwargs)

    def _picked(self, indices: list[int], extra: list[tuple]):
        """The units holding the chunks asked about: [(unit, chunks)], and per unit its `picked`."""
        by_unit: dict[int, list[int]] = {}
        for n, i in enumerate(indices):
            by_unit.setdefault(self.unit_of[i][0], []).append(n)
        asked = [(self.unit_list[u], [indices[n] for n in ns]) for u, ns in by_unit.items()]
        picked = [[(self.unit_of[indices[n]][1], extra[n]) for n in ns] for ns in by_unit.values()]
        return asked, picked

    def origins(self, unit: tuple[int, ...]) -> list[int]:
        return [int(self.starts[i]) for i in unit]

    def _here(self, fn, unit, picked, args, kwargs):
        rows = [self.parts[i] for i in unit]
        return on_block(rows, self.key(unit), self.prep, self.origins(unit), fn, picked, args, kwargs)

    def _by_hosts(self, fn, asked, picked, args, kwargs) -> list:
        """The calls through each unit's Host actor, all workers at once."""
        # Pickled here into one bytes message each way: Dask would send each array (of the
        # centres, of the sums) as a frame of its own, a slower round trip.
        pending = [
            self.hosts[unit].run(
                pickle.dumps((fn, mine, args, kwargs, self.prep), protocol=pickle.HIGHEST_PROTOCOL)
            )
            for (unit, _), mine in zip(asked, picked, strict=True)
        ]
        return [pickle.loads(future.result()) for future in pending]

    def _start_hosts(self) -> None:
        """One Host actor per worker holding chunks, given those chunks as its unit (no data moves)."""
        from distributed import wait

        wait(self.parts)
        held = self.client.who_has(self.parts)
        by_worker: dict[str, list[int]] = {}
        for i, part in enumerate(self.parts):
            by_worker.setdefault(held[part.key][0], []).append(i)
        units = [tuple(members) for members in by_worker.values()]
        self._actors = [
            self.client.submit(
                Host,
                self.key(unit),
                self.origins(unit),
                *[self.parts[i] for i in unit],
                actor=True,
                pure=False,
                workers=[address],
            )
            for address, unit in zip(by_worker, units, strict=True)
        ]
        self.hosts = {unit: future.result() for unit, future in zip(units, self._actors, strict=True)}
        self.unit_homes = dict(zip(units, by_worker, strict=True))
        self._set_units(units)
        self.homes.update({i: address for unit, address in self.unit_homes.items() for i in unit})

    def _stop_hosts(self) -> None:
        self.hosts, self.unit_homes, self._actors = {}, {}, []
        self._single_units()

    def _by_tasks(self, fn, asked, picked, args, kwargs) -> list:
        """The calls as one task per unit (a chunk) through the scheduler (sent again where a
        worker died with chunks scattered from here)."""
        for attempt in range(RESEND_TRIES + 1):
            futures = [
                self.client.submit(
                    at_home,
                    on_block,
                    [self.parts[i] for i in unit],
                    self.key(unit),
                    self.prep,
                    self.origins(unit),
                    fn,
                    mine,
                    args,
                    kwargs,
                    pure=False,
                    **self.placement(unit),
                )
                for (unit, _), mine in zip(asked, picked, strict=True)
            ]
            try:
                answers = self.client.gather(futures)
            except Exception:
                lost = [i for i, part in enumerate(self.parts) if part.status != "finished"]
                if self.source is None or not lost or attempt == RESEND_TRIES:
                    raise
                # A worker died with chunks scattered from here: send them again (states rebuild).
                for i, part in zip(lost, self._scatter(lost), strict=True):
                    self.parts[i] = part
                continue
            for (unit, _), (address, _) in zip(asked, answers, strict=True):
                self.homes.update({i: address for i in unit})
            return [answer for _, answer in answers]
        raise AssertionError("unreachable")

    def placement(self, unit: tuple[int, ...]) -> dict:
        """Run a unit's task where its state is (the worker that answered last), or, if that
        worker is gone, anywhere: a loose restriction. Without it, a chunk copied to a second
        worker would see its tasks alternate between the two and rebuild its state each time."""
        home = self.unit_homes.get(unit) or self.homes.get(unit[0])
        return {} if home is None else {"workers": [home], "allow_other_workers": True}

    def close(self) -> None:
        """Drop the blocks on every worker (or here)."""
        if self.client is None:
            forget(self.token)
            self.pool.shutdown()
        else:
            self._stop_hosts()
            with contextlib.suppress(Exception):  # a cluster already gone keeps nothing of ours
                self.client.run(forget, self.token)


def at_home(fn, *args, **kwargs):
    """fn's answer, with the address of the worker that gave it (where the block now is)."""
    from distributed import get_worker

    return get_worker().address, fn(*args, **kwargs)


def split_by_threads(n: int, nthreads: dict[str, int]) -> tuple[list[int], dict[int, str]]:
    """NumPy data cut into one piece per worker, rows in proportion to its threads: sizes, and
    the worker each piece is for (a worker then joins nothing: its rows are held once)."""
    workers = sorted(nthreads)
    if not workers:
        return [n], {}
    weights = np.array([max(1, nthreads[w]) for w in workers], dtype=np.float64)
    edges = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(np.int64)
    pieces = [(int(b - a), w) for a, b, w in zip(edges[:-1], edges[1:], workers, strict=True) if b > a]
    return [size for size, _ in pieces], {i: w for i, (_, w) in enumerate(pieces)}
