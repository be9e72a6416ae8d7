"""How the Dask engine's calls reach X's row chunks, and what a worker keeps of each chunk.

A worker keeps, per chunk, its prepared rows and one fit's `engine.BlockState` (labels, bounds,
sums) in CHUNKS, from one call to the next: a cache, never the only copy of anything, since
every state can be rebuilt from the data and the centres (a call that misses it answers LOST).

`Chunks` is the client's side: X's chunks as futures on a cluster (or arrays on threads here),
and `map(fn, ...)` runs a chunk function on each. On a cluster each worker gets one actor
(`Host`) holding its chunks, which the client calls directly, with no task and no scheduler in
between: a round trip of ~3 ms, where a task per chunk costs ~15 ms (on MNIST most of an
iteration). When a worker dies with its actor, that call is made again as ordinary tasks, which
Dask can run anywhere (NumPy data scattered from here is sent again), and actors are set up
again on the workers left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import numpy as np

from .. import prepared
from ..lloyd import BlockState, Prepared

LOST = "lost"  # a task's answer when the state it needs is not on its worker (rebuild on request)
RESEND_TRIES = 3  # how often chunks of scattered NumPy data are sent again after a lost worker


# ---------------------------------------------------------------------- what a worker keeps


CHUNKS: dict[tuple[str, int], Chunk] = {}  # (fit token, chunk index) -> its state on this worker


class Chunk:
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


def chunk_state(rows: np.ndarray, key: tuple[str, int], prep) -> Chunk:
    chunk = CHUNKS.get(key)
    if chunk is None:
        chunk = CHUNKS[key] = Chunk(rows, prep)
    return chunk


def forget(token: str) -> None:
    """Drop every chunk state of one fit (runs on each worker when the fit ends)."""
    for key in [key for key in CHUNKS if key[0] == token]:
        del CHUNKS[key]


class Host:
    """A Dask actor, one per worker, given the chunks that worker holds: runs chunk functions on
    them (on as many threads as the worker has) when the client calls `run`, with no task and no
    scheduler in between. Holds no state of its own: the chunks' states are in CHUNKS."""

    def __init__(self, *rows: np.ndarray):
        from distributed import get_worker

        self.rows = rows
        self.pool = ThreadPoolExecutor(max(1, get_worker().state.nthreads))

    async def run(self, message: bytes) -> bytes:
        """fn(rows of chunk `slot`, *call, **kwargs) for each (slot, call) of the pickled
        (fn, calls, kwargs), in order, answered pickled (see Chunks._by_hosts)."""
        fn, calls, kwargs = pickle.loads(message)
        loop = asyncio.get_running_loop()
        jobs = [
            loop.run_in_executor(self.pool, functools.partial(fn, self.rows[slot], *call, **kwargs))
            for slot, call in calls
        ]
        return pickle.dumps(await asyncio.gather(*jobs), protocol=pickle.HIGHEST_PROTOCOL)


# ---------------------------------------------------------------------- the client's side


class Chunks:
    """X's row chunks and how tasks reach them: futures on a Dask cluster, or arrays here.

    `map(fn, *args, only=..., each=..., **kwargs)` runs fn(chunk, key, prep, *args, *each[n],
    **kwargs) for each chunk (or the chunks listed in `only`) and returns the answers in order.
    """

    def __init__(self, X, client, token: str, prep: tuple[np.ndarray, float]):
        self.client, self.token, self.prep = client, token, prep
        self.source = None  # NumPy data scattered from here: sent again if a worker dies with it
        if isinstance(X, np.ndarray):
            self.source = X
            self.sizes = split_rows(X.shape[0], n_parts(client))
        else:
            self.sizes = list(X.chunks[0])
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.keys = [(token, i) for i in range(len(self.sizes))]
        self.pool = ThreadPoolExecutor(prepared.THREADS) if client is None else None
        self.homes: dict[int, str] = {}  # chunk -> address of the worker that holds its state
        self.hosts: dict[str, Any] = {}  # worker address -> its Host actor (on a cluster)
        self.slots: dict[int, tuple[str, int]] = {}  # chunk -> (its worker, its place in the host)
        self._actors: list = []  # the futures that keep the actors alive
        self.hosts_answered = False  # whether an actor call has come back in this fit
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
                answers = self._by_hosts(fn, indices, calls, kwargs)
                self.hosts_answered = True
                return answers
            except Exception:  # a worker lost with its actor: tasks recover (and rerun what ran)
                self._stop_hosts()
                answers = self._by_tasks(fn, indices, calls, kwargs)
                if self.hosts_answered:  # actors worked here: set them up on the workers left
                    with contextlib.suppress(Exception):
                        self._start_hosts()
                return answers  # else (workers this client cannot reach directly): tasks only
        return self._by_tasks(fn, indices, calls, kwargs)

    def _by_hosts(self, fn, indices: list[int], calls: list[tuple], kwargs: dict) -> list:
        """The calls through each worker's Host actor, all workers at once."""
        by_worker: dict[str, list[int]] = {}
        for n, i in enumerate(indices):
            by_worker.setdefault(self.slots[i][0], []).append(n)
        # Pickled here into one bytes message each way: Dask would send each array (of the
        # centres, of the sums) as a frame of its own, ~1.5 ms more a round trip on MNIST.
        pending = [
            (
                members,
                self.hosts[address].run(
                    pickle.dumps(
                        (fn, [(self.slots[indices[n]][1], calls[n]) for n in members], kwargs),
                        protocol=pickle.HIGHEST_PROTOCOL,
                    )
                ),
            )
            for address, members in by_worker.items()
        ]
        answers: list = [None] * len(indices)
        for members, future in pending:
            for n, answer in zip(members, pickle.loads(future.result()), strict=True):
                answers[n] = answer
        return answers

    def _start_hosts(self) -> None:
        """One Host actor per worker holding chunks, given those chunks (no data moves)."""
        from distributed import wait

        wait(self.parts)
        held = self.client.who_has(self.parts)
        by_worker: dict[str, list[int]] = {}
        for i, part in enumerate(self.parts):
            by_worker.setdefault(held[part.key][0], []).append(i)
        self._actors = [
            self.client.submit(
                Host, *[self.parts[i] for i in members], actor=True, pure=False, workers=[address]
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
                self.client.submit(
                    at_home, fn, self.parts[i], *call, pure=False, **kwargs, **self.placement(i)
                )
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

    def placement(self, i: int) -> dict:
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
            forget(self.token)
            self.pool.shutdown()
        else:
            self._stop_hosts()
            with contextlib.suppress(Exception):  # a cluster already gone keeps nothing of ours
                self.client.run(forget, self.token)


def at_home(fn, *args, **kwargs):
    """fn's answer, with the address of the worker that gave it (where the chunk's state now is)."""
    from distributed import get_worker

    return get_worker().address, fn(*args, **kwargs)


def n_parts(client) -> int:
    """How many chunks NumPy data is cut into: one per worker thread of the cluster."""
    return max(1, sum(client.nthreads().values()))


def split_rows(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [len(part) for part in np.array_split(np.arange(n), parts)]
