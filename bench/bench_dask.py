"""The "dask" section of bench.py: our engine on a Dask cluster, against our in-memory engine and dask-ml.

Needs the bench extra (dask, distributed, dask-ml). Everything runs in one process against a
`LocalCluster(n_workers=2, threads_per_worker=1)` started here, fits alternating, medians:

- MNIST-70k, K=10, from the same initial centres (one seed per repeat): our Dask engine vs our
  in-memory engine (target: at most 2x) and vs dask-ml's KMeans (target: at least 5x faster).
  dask-ml gets the data as float32 (its uint8 centres would be rounded) and `tol` = our absolute
  tolerance (tol x the mean pixel variance): its rule is "squared centre shift < tol", ours
  "<= tol, or no label changed", and it re-seeds no emptied cluster.
- The large generated set (bench/mnist8m.py when present, else synthetic blobs) of 1,000,000
  rows, written as a .npy and read by the workers chunk by chunk: time per iteration over 10
  iterations (tol=0) from the same start, Dask vs in memory on the memory-mapped file
  (target: at most 2x).

The data is placed on the workers (persisted) before the timings: on a cluster it lives there.
"""

from __future__ import annotations

import itertools
import logging
import statistics
import sys
from pathlib import Path

import numpy as np

LARGE_ROWS = 1_000_000
QUICK_LARGE_ROWS = 20_000
CHUNK_ROWS = 50_000  # rows per chunk of the large set on the workers


def bench_dask(b) -> None:
    """dask: MNIST-70k K=10 on LocalCluster(2 workers x 1 thread) vs in memory and dask-ml; a 1M set per iteration"""
    import dask.array as da
    from distributed import Client, LocalCluster

    from bench import fmt_ratio, fmt_time, pick_init, timed, verdict
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine.dask import fit as dask_engine

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        x = b.data("mnist")
        X = _scattered(client, x, parts=2)
        X32 = X.astype(np.float32).persist()
        case = f"mnist N={len(x):,} K=10, LocalCluster 2 workers x 1 thread"
        tol_abs = engine.Prepared(x).tol_abs(1e-4)
        dask_engine.fit(X, 10, init=pick_init(x, 10, 10_000), max_iter=3)  # warm both sides
        engine.fit(x, 10, init=pick_init(x, 10, 10_000), max_iter=3)
        runs = {"dask": [], "memory": [], "dask-ml": []}
        for repeat in range(b.repeats):
            init = pick_init(x, 10, repeat)
            sides = {
                "dask": lambda init=init: dask_engine.fit(X, 10, init=init),
                "memory": lambda init=init: engine.fit(x, 10, init=init),
            }
            if repeat < b.big_repeats:  # dask-ml takes tens of seconds a fit
                sides["dask-ml"] = lambda init=init: _dask_ml(X32, init, tol_abs)
            for name in sorted(sides, reverse=bool(repeat % 2)):
                seconds, result = timed(sides[name])
                runs[name].append((seconds, result))
        ours = runs["dask"]
        for name, target, limit in (
            ("memory", "<= 2x our in-memory fit", 2.0),
            ("dask-ml", "<= 0.2x dask-ml", 0.2),
        ):
            ref = runs[name]
            ours_s = statistics.median(s for s, _ in ours[: len(ref)])
            ref_s = statistics.median(s for s, _ in ref)
            pairs = [(o, r) for (_, o), (_, r) in zip(ours[: len(ref)], ref, strict=True)]
            agree = [100 * np.mean(np.asarray(o.labels_) == np.asarray(r.labels_)) for o, r in pairs]
            inertia = [abs(o.inertia_ - r.inertia_) / r.inertia_ for o, r in pairs]
            iters = [f"{o.n_iter_}/{r.n_iter_}" for o, r in pairs]
            b.add(
                "dask",
                f"{case}, vs {'our in-memory engine' if name == 'memory' else 'dask-ml KMeans'}",
                ours=fmt_time(ours_s),
                reference=fmt_time(ref_s),
                **{
                    "ours/ref": fmt_ratio(ours_s, ref_s),
                    "labels identical": f"{min(agree):.3f} %",
                    "inertia rel. diff": f"{max(inertia):.1e}",
                    "iter ours/ref": iters[0] if len(set(iters)) == 1 else " ".join(iters),
                    "target": f"{target}: {verdict(ours_s <= limit * ref_s)}",
                },
            )
        _large_rows(b, client, "dask", da)


def _scattered(client, x: np.ndarray, parts: int):
    """x sent to the workers in `parts` row chunks, as a dask array over those futures."""
    import dask.array as da

    edges = np.linspace(0, len(x), parts + 1).astype(int)
    futures = client.scatter([x[a:z] for a, z in itertools.pairwise(edges)], hash=False)
    return da.concatenate(
        [
            da.from_delayed(f, shape=(z - a, x.shape[1]), dtype=x.dtype)
            for f, (a, z) in zip(futures, itertools.pairwise(edges), strict=True)
        ]
    )


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


def _npy_array(path: Path, chunk_rows: int):
    """A .npy file as a dask array whose chunks the workers read themselves (no data via the client)."""
    import dask
    import dask.array as da

    images = np.load(path, mmap_mode="r")
    n, d = images.shape
    parts = [
        da.from_delayed(
            dask.delayed(_load_rows)(str(path), a, min(n, a + chunk_rows)),
            (min(n, a + chunk_rows) - a, d),
            images.dtype,
        )
        for a in range(0, n, chunk_rows)
    ]
    return da.concatenate(parts)


def _large_set(b, rows: int) -> Path:
    """The scale issue's generated set (bench/mnist8m.py) of `rows` rows, else synthetic blobs, as a .npy."""
    path = b.workdir / f"large-{rows}.npy"
    if path.exists():
        return path
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


def _large_rows(b, client, section: str, da) -> None:
    from bench import fmt_ratio, fmt_time, pick_init, timed, verdict
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine.dask import fit as dask_engine

    rows = QUICK_LARGE_ROWS if b.quick else LARGE_ROWS
    path = _large_set(b, rows)
    x = np.load(path, mmap_mode="r")
    X = _npy_array(path, CHUNK_ROWS if not b.quick else 5000).persist()
    from distributed import wait

    wait(X)
    ours, ref = [], []
    for repeat in range(b.big_repeats):
        init = pick_init(x, 10, repeat)
        sides = [
            (ours, lambda init=init: dask_engine.fit(X, 10, init=init, tol=0, max_iter=10)),
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
        f"generated N={rows:,} x 784 (.npy, {X.numblocks[0]} chunks), K=10, per iteration (tol=0, 10 it.)",
        ours=fmt_time(ours_s),
        reference=fmt_time(ref_s),
        **{
            "ours/ref": fmt_ratio(ours_s, ref_s),
            "labels identical": f"{agree:.3f} %",
            "iter ours/ref": "10/10",
            "target": f"<= 2x in memory per iteration: {verdict(ours_s <= 2 * ref_s)}",
        },
    )
