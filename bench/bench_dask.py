"""The "dask" section of bench.py: our engine on a Dask cluster, against our in-memory engine (and dask-ml).

Needs the bench extra (dask, distributed; dask-ml for its row, else "not installed"). Everything
runs in one process against a `LocalCluster(n_workers=2, threads_per_worker=1)` started here,
fits alternating with the in-memory reference measured in the same run, medians (and minima):

- MNIST-70k, K=10, from the same initial centres (one seed per repeat), the data persisted on the
  workers in 2, 7, 28 and 280 row chunks: each against our in-memory engine (target: at most
  2x), and the 280-chunk fit against the 2-chunk one (target: at most 1.2x: a fit's cost must not
  grow with the number of chunks).
- Against dask-ml's KMeans (target: at least 5x faster), 2 chunks. dask-ml gets the data as
  float32 (its uint8 centres would be rounded) and `tol` = our absolute tolerance (tol x the
  mean pixel variance): its rule is "squared centre shift < tol", ours "<= tol, or no label
  changed", and it re-seeds no emptied cluster.
- The large generated set (bench/mnist8m.py when present, else synthetic blobs) of 1,000,000
  rows, written as a .npy and read by the workers chunk by chunk (as many rows on each worker),
  in 20 and in 200 chunks: time
  per iteration over 10 iterations (tol=0) from the same start, Dask vs in memory on the
  memory-mapped file (target: at most 2x).

The data is placed on the workers (persisted) before the timings: on a cluster it lives there.
Each row's notes give the load average (1 minute) when it was measured: the machine is shared.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import statistics
import sys
from pathlib import Path

import numpy as np

LARGE_ROWS = 1_000_000
QUICK_LARGE_ROWS = 20_000
LARGE_CHUNK_COUNTS = (20, 200)  # chunks of the large set on the workers
CHUNK_COUNTS = (2, 7, 28, 280)  # chunks of MNIST on the workers
CLUSTER = "LocalCluster 2 workers x 1 thread"


def bench_dask(b) -> None:
    """dask: MNIST-70k K=10 on LocalCluster(2 workers x 1 thread) in 2-280 chunks vs in memory (and dask-ml); a 1M set per iteration in 20 and 200 chunks"""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        x = b.data("mnist")
        arrays = {count: _scattered(client, x, parts=count) for count in CHUNK_COUNTS}
        _chunk_rows(b, x, arrays)
        _dask_ml_rows(b, x, arrays[CHUNK_COUNTS[0]])
        del arrays
        for count in LARGE_CHUNK_COUNTS:
            _large_rows(b, client, "dask", count)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def _agreement(pairs) -> dict[str, str]:
    """Label agreement, inertia difference and iterations of (ours, reference) result pairs."""
    agree = [100 * np.mean(np.asarray(o.labels_) == np.asarray(r.labels_)) for o, r in pairs]
    inertia = [abs(o.inertia_ - r.inertia_) / r.inertia_ for o, r in pairs]
    iters = [f"{o.n_iter_}/{r.n_iter_}" for o, r in pairs]
    return {
        "labels identical": f"{min(agree):.3f} %",
        "inertia rel. diff": f"{max(inertia):.1e}",
        "iter ours/ref": iters[0] if len(set(iters)) == 1 else " ".join(iters),
    }


def _chunk_rows(b, x: np.ndarray, arrays: dict) -> None:
    """Our Dask fit of MNIST K=10 in each number of chunks, against the in-memory fit, alternating."""
    from bench import fmt_ratio, fmt_time, pick_init, timed, verdict
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine.dask import fit as dask_engine

    warm = pick_init(x, 10, 10_000)
    engine.fit(x, 10, init=warm, max_iter=3)
    for X in arrays.values():  # warm every side (actors, the workers' imports)
        dask_engine.fit(X, 10, init=warm, max_iter=3)
    runs: dict = {"memory": [], **{count: [] for count in arrays}}
    loads = []
    for repeat in range(b.repeats):
        init = pick_init(x, 10, repeat)
        sides = {"memory": lambda init=init: engine.fit(x, 10, init=init)}
        sides.update(
            {count: lambda X=X, init=init: dask_engine.fit(X, 10, init=init) for count, X in arrays.items()}
        )
        order = list(sides)
        for name in order[::-1] if repeat % 2 else order:
            runs[name].append(timed(sides[name]))
        loads.append(os.getloadavg()[0])
    ref = runs["memory"]
    ref_s = statistics.median(s for s, _ in ref)
    ref_min = min(s for s, _ in ref)
    load = f"load {min(loads):.1f}-{max(loads):.1f}"
    for count in arrays:
        ours = runs[count]
        ours_s = statistics.median(s for s, _ in ours)
        b.add(
            "dask",
            f"mnist N={len(x):,} K=10, {count} chunks of ~{len(x) // count:,} rows, {CLUSTER}, vs our in-memory engine",
            ours=fmt_time(ours_s),
            reference=fmt_time(ref_s),
            **{"ours/ref": fmt_ratio(ours_s, ref_s)},
            **_agreement([(o, r) for (_, o), (_, r) in zip(ours, ref, strict=True)]),
            target=f"<= 2x our in-memory fit: {verdict(ours_s <= 2 * ref_s)}",
            notes=f"minima {fmt_time(min(s for s, _ in ours))} / {fmt_time(ref_min)}; {load}",
        )
    few, many = CHUNK_COUNTS[0], CHUNK_COUNTS[-1]
    many_s = statistics.median(s for s, _ in runs[many])
    few_s = statistics.median(s for s, _ in runs[few])
    b.add(
        "dask",
        f"mnist N={len(x):,} K=10, {many} chunks vs {few} chunks, {CLUSTER}",
        ours=fmt_time(many_s),
        reference=fmt_time(few_s),
        **{"ours/ref": fmt_ratio(many_s, few_s)},
        **_agreement([(o, r) for (_, o), (_, r) in zip(runs[many], runs[few], strict=True)]),
        target=f"<= 1.2x the {few}-chunk fit: {verdict(many_s <= 1.2 * few_s)}",
        notes=load,
    )


def _dask_ml_rows(b, x: np.ndarray, X) -> None:
    """Our Dask fit against dask-ml's KMeans from the same starts (when dask-ml is installed)."""
    from bench import fmt_ratio, fmt_time, pick_init, timed, verdict
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine.dask import fit as dask_engine

    case = f"mnist N={len(x):,} K=10, {CLUSTER}, vs dask-ml KMeans"
    try:
        import dask_ml  # noqa: F401
    except ImportError:
        b.add("dask", case, notes="dask-ml not installed")
        return
    X32 = X.astype(np.float32).persist()
    tol_abs = engine.Prepared(x).tol_abs(1e-4)
    runs = {"dask": [], "dask-ml": []}
    for repeat in range(b.big_repeats):  # dask-ml takes tens of seconds a fit
        init = pick_init(x, 10, repeat)
        sides = {
            "dask": lambda init=init: dask_engine.fit(X, 10, init=init),
            "dask-ml": lambda init=init: _dask_ml(X32, init, tol_abs),
        }
        for name in sorted(sides, reverse=bool(repeat % 2)):
            runs[name].append(timed(sides[name]))
    ours_s = statistics.median(s for s, _ in runs["dask"])
    ref_s = statistics.median(s for s, _ in runs["dask-ml"])
    b.add(
        "dask",
        case,
        ours=fmt_time(ours_s),
        reference=fmt_time(ref_s),
        **{"ours/ref": fmt_ratio(ours_s, ref_s)},
        **_agreement([(o, r) for (_, o), (_, r) in zip(runs["dask"], runs["dask-ml"], strict=True)]),
        target=f"<= 0.2x dask-ml: {verdict(ours_s <= 0.2 * ref_s)}",
        notes=_load(),
    )


def _scattered(client, x: np.ndarray, parts: int):
    """x sent to the workers in `parts` row chunks (dealt round-robin), as a persisted dask array."""
    import dask.array as da
    from distributed import wait

    edges = np.linspace(0, len(x), parts + 1).astype(int)
    futures = client.scatter([x[a:z] for a, z in itertools.pairwise(edges)], hash=False)
    X = da.concatenate(
        [
            da.from_delayed(f, shape=(z - a, x.shape[1]), dtype=x.dtype)
            for f, (a, z) in zip(futures, itertools.pairwise(edges), strict=True)
        ]
    ).persist()  # the array's own chunks held on the workers, as a persisted array's are
    wait(X)
    return X


def _dask_ml(X, init: np.ndarray, tol_abs: float):
    """dask-ml's KMeans fit; its inertia_ replaced by that of its centres (its own sums unsquared
    distances)."""
    from dask_ml.cluster import KMeans as DaskMLKMeans

    from kmeans_mnist.engine.dask import fit as dask_engine

    model = DaskMLKMeans(n_clusters=len(init), init=init, n_init=1, max_iter=300, tol=tol_abs).fit(X)
    model.inertia_ = dask_engine.inertia(X, model.cluster_centers_.astype(np.float64))
    return model


def _load_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of a .npy, read by the worker that is to hold them."""
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def _npy_array(client, path: Path, chunk_rows: int):
    """A .npy file as a persisted dask array whose chunks the workers read themselves (no data via
    the client), the first chunks on the first worker and so on: as many rows on each. Left to
    Dask, the 20 reads of the 1M set went 14 to one worker and 6 to the other, and an iteration
    waits for the worker with the most rows."""
    import dask.array as da
    from distributed import wait

    images = np.load(path, mmap_mode="r")
    n, d = images.shape
    workers = sorted(client.nthreads())
    starts = range(0, n, chunk_rows)
    futures = [
        client.submit(
            _load_rows,
            str(path),
            a,
            min(n, a + chunk_rows),
            workers=[workers[i * len(workers) // len(starts)]],
        )
        for i, a in enumerate(starts)
    ]
    X = da.concatenate(
        [
            da.from_delayed(future, (min(n, a + chunk_rows) - a, d), images.dtype)
            for future, a in zip(futures, starts, strict=True)
        ]
    ).persist()
    wait(X)
    return X


def _large_set(b, rows: int) -> Path:
    """The scale issue's generated set (bench/mnist8m.py) of `rows` rows, else synthetic blobs, as
    a .npy (kept in --scale-dir when given, and reused from there)."""
    path = (b.scale_dir or b.workdir) / f"large-{rows}.npy"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from mnist8m import write_set
    except ImportError:
        write_set = None
    if write_set is not None and b.have_data:
        write_set(path, rows, seed=8_100_000, threads=2, progress=False)
    else:
        from bench import synthetic_blobs

        np.save(path, synthetic_blobs(rows))
    return path


def _large_rows(b, client, section: str, n_chunks: int) -> None:

    from bench import fmt_ratio, fmt_time, pick_init, timed, verdict
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine.dask import fit as dask_engine

    rows = QUICK_LARGE_ROWS if b.quick else LARGE_ROWS
    path = _large_set(b, rows)
    x = np.load(path, mmap_mode="r")
    X = _npy_array(client, path, -(-rows // n_chunks))
    ours, ref = [], []
    for repeat in range(b.big_repeats):
        init = pick_init(x, 10, repeat)
        sides = [
            (ours, lambda init=init, X=X: dask_engine.fit(X, 10, init=init, tol=0, max_iter=10)),
            (ref, lambda init=init: engine.fit(x, 10, init=init, tol=0, max_iter=10)),
        ]
        for times, fit in sides[:: -1 if repeat % 2 else 1]:
            seconds, result = timed(fit)
            times.append((seconds / result.n_iter_, result))
    ours_s = statistics.median(s for s, _ in ours)
    ref_s = statistics.median(s for s, _ in ref)
    agree = min(
        100 * np.mean(np.asarray(o.labels_) == r.labels_) for (_, o), (_, r) in zip(ours, ref, strict=True)
    )
    b.add(
        section,
        f"generated N={rows:,} x 784 (.npy, {X.numblocks[0]} chunks), K=10, per iteration (tol=0, 10 it.), {CLUSTER}",
        ours=fmt_time(ours_s),
        reference=fmt_time(ref_s),
        **{
            "ours/ref": fmt_ratio(ours_s, ref_s),
            "labels identical": f"{agree:.3f} %",
            "iter ours/ref": "10/10",
            "target": f"<= 2x in memory per iteration: {verdict(ours_s <= 2 * ref_s)}",
        },
        notes=f"minima {fmt_time(min(s for s, _ in ours))} / {fmt_time(min(s for s, _ in ref))}; {_load()}",
    )
    del X
    gc.collect()
