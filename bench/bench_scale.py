"""The "scale" section of bench.py: the MNIST8M-sized set, early iterations, k-means++ and k-means||.

- early: time per iteration over the first 10 iterations (tol=0) from the same start, ours
  against scikit-learn's KMeans (lloyd, float32), alternating, medians of --big-repeats:
  synthetic 1M x 784 (K=10) and MNIST-70k (K=10, 32, 256). Target: at most 0.8x.
- k-means++: our start (data preparation included) against `sklearn.cluster.kmeans_plusplus`
  on the float32 images (what scikit-learn's KMeans runs on them; float64 in the notes), MNIST
  K=10 and K=100, alternating, medians of --repeats. Target: at most 0.5x.
- k-means||: MNIST-70k K=10, final inertia averaged over 10 seeds against k-means++'s.
  Target: within 1 %.
- generated: bench/mnist8m.py writes the 8.1M set once (the 1M, 2M and 4M sets are its first
  rows, by construction); each measurement runs in a fresh process that memory-maps the file,
  while this one polls its private memory (RssAnon in /proc, which leaves out the file's cached
  pages that RSS counts): 20 iterations (tol=0) from a shared random start, a fit to
  convergence (tol=1e-4) from the same start, the k-means++ and the k-means|| starts. The
  k-means|| row's target: less than a quarter of k-means++'s start on the 8.1M set.
  Both starts are also set against scikit-learn's `kmeans_plusplus` on the 1M set. scikit-learn
  runs the 20 iterations on the 1M set only (its float32 copy, 3.1 GB there, would be 25.4 GB at
  8.1M: more than this 24 GB machine holds).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

FULL_ROWS = 8_100_000
SIZES = (1_000_000, 2_000_000, 4_000_000, FULL_ROWS)
QUICK_SIZES = (20_000, 40_000)
POLL_SECONDS = 0.02
EARLY_REPEATS = 7  # starts per early-iteration row (see _early_iterations)

# One measurement on the first `rows` rows of a memory-mapped .npy, in a fresh process.
CHILD = r"""
import json, sys, time
import numpy as np
from kmeans_mnist.engine import lloyd as engine
path, rows, k, what = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
sys.path.insert(0, sys.argv[5])  # bench/: our_start, the start as a fit makes it
from bench_scale import our_start
x = np.load(path, mmap_mode="r")[:rows]
init = x[np.sort(np.random.default_rng(0).choice(rows, k, replace=False))].astype(np.float64)
out = {}
started = time.perf_counter()
if what == "iterations":
    result = engine.fit(x, k, init=init, max_iter=20, tol=0)
    out = {"n_iter": result.n_iter_, "inertia": result.inertia_}
elif what == "converge":
    result = engine.fit(x, k, init=init)
    out = {"n_iter": result.n_iter_, "inertia": result.inertia_, "converged": result.converged_}
elif what in ("k-means++", "k-means||"):
    our_start(x, k, 0, what)
elif what == "sklearn":
    from sklearn.cluster import KMeans
    x32 = np.asarray(x, dtype=np.float32)
    started = time.perf_counter()
    result = KMeans(k, init=init, n_init=1, max_iter=20, tol=0, algorithm="lloyd").fit(x32)
    out = {"n_iter": int(result.n_iter_), "inertia": float(result.inertia_)}
elif what == "sklearn-k-means++":
    from sklearn.cluster import kmeans_plusplus
    x32 = np.asarray(x, dtype=np.float32)
    started = time.perf_counter()
    kmeans_plusplus(x32, k, random_state=0)
out["seconds"] = time.perf_counter() - started
print(json.dumps(out))
"""


def bench_scale(b) -> None:
    """scale: early iterations and k-means++ vs scikit-learn, k-means|| vs k-means++, the 1M-8.1M generated sets"""
    _early_iterations(b)
    _plusplus(b)
    _parallel_quality(b)
    _generated(b)


def _early_iterations(b) -> None:
    from bench import compare, synthetic_blobs, verdict

    # scikit-learn's own time per iteration moves by 10-40 % from one run to the next here (MNIST
    # K=32: 47-99 ms): at least EARLY_REPEATS starts, so that a median means something.
    repeats = b.big_repeats if b.quick else max(b.big_repeats, EARLY_REPEATS)
    how = "per iteration over the first 10 (tol=0, max_iter=10) from the same random rows; median of"
    cases = [("synthetic", 20_000 if b.quick else 1_000_000, 10)]
    cases += [("mnist", None, k) for k in (10, 32, 256)]
    for source, n, k in cases:
        x = synthetic_blobs(n) if source == "synthetic" else b.data("mnist")
        pair = compare(x, k, range(repeats), tol=0.0, max_iter=10)
        ratio = pair.ratio()
        b.add(
            "scale",
            f"early iterations: {source} N={len(x):,} x 784, K={k}",
            **pair.cells(per_iteration=True),
            target=f"<= 0.8x: {verdict(ratio <= 0.8)}",
            notes=f"{how} {repeats}; labels: ours against scikit-learn's float32 run",
        )
        del x
        gc.collect()


def our_start(x: np.ndarray, k: int, seed: int, init: str = "k-means++") -> np.ndarray:
    """Our start ("k-means++" or "k-means||") as a fit makes it: data prepared, worker threads,
    BLAS in one thread each."""
    from kmeans_mnist.engine import lloyd as engine
    from kmeans_mnist.engine import prepared

    data = engine.Prepared(x, column_sums=False)  # as an unweighted fit prepares it
    pool = ThreadPoolExecutor(prepared.THREADS) if data.parallel else None
    try:
        with threadpool_limits(1, user_api="blas") if pool else threadpool_limits(None):
            return engine.initial_centers(data, init, k, np.random.default_rng(seed), pool)
    finally:
        if pool is not None:
            pool.shutdown()


def _plusplus(b) -> None:
    from sklearn.cluster import kmeans_plusplus

    from bench import fmt_ratio, fmt_time, timed, verdict

    x = b.data("mnist")
    x32, x64 = x.astype(np.float32), x.astype(np.float64)
    our_start(x, 10, 999)
    kmeans_plusplus(x32, 10, random_state=999)
    for k in (10, 100):
        ours, ref, ref64 = [], [], []
        for repeat in range(b.repeats):
            sides = [
                (ours, lambda k=k, repeat=repeat: our_start(x, k, repeat)),
                (ref, lambda k=k, repeat=repeat: kmeans_plusplus(x32, k, random_state=repeat)),
                (ref64, lambda k=k, repeat=repeat: kmeans_plusplus(x64, k, random_state=repeat)),
            ]
            for times, run in sides[:: -1 if repeat % 2 else 1]:
                times.append(timed(run)[0])
        ours_s, ref_s, ref64_s = (statistics.median(t) for t in (ours, ref, ref64))
        b.add(
            "scale",
            f"k-means++ start: mnist N={len(x):,}, K={k}",
            ours=fmt_time(ours_s),
            reference=fmt_time(ref_s),
            **{"ours/ref": fmt_ratio(ours_s, ref_s)},
            target=f"<= 0.5x: {verdict(ours_s <= 0.5 * ref_s)}",
            notes=f"greedy, {2 + int(np.log(k))} trials a centre on both sides; reference: "
            f"sklearn.cluster.kmeans_plusplus on float32 (on float64: {fmt_time(ref64_s)}, ours/ref "
            f"{fmt_ratio(ours_s, ref64_s)}); ours includes preparing the data; median of {b.repeats}",
        )


def _parallel_quality(b) -> None:
    from bench import fmt_time, verdict
    from kmeans_mnist.engine import lloyd as engine

    x = b.data("mnist")
    seeds = range(3 if b.quick else 10)
    runs = {"k-means++": [], "k-means||": []}
    for seed in seeds:
        for init, results in runs.items():
            started = time.perf_counter()
            result = engine.fit(x, 10, init=init, random_state=seed)
            results.append((result.inertia_, result.n_iter_, time.perf_counter() - started))
    ours, ref = (np.mean([r[0] for r in runs[name]]) for name in ("k-means||", "k-means++"))
    difference = ours / ref - 1
    b.add(
        "scale",
        f"k-means|| start: mnist N={len(x):,}, K=10, final inertia (mean of {len(seeds)} seeds)",
        ours=f"{ours:.5g}",
        reference=f"{ref:.5g}",
        **{
            "ours/ref": f"{ours / ref:.4f}",
            "iter ours/ref": "/".join(f"{np.mean([r[1] for r in runs[n]]):.0f}" for n in runs),
        },
        target=f"within 1 % of k-means++: {verdict(abs(difference) <= 0.01)}",
        notes=f"reference: k-means++ (greedy); seeds 0-{len(seeds) - 1}, each fit to convergence; mean fit "
        f"time (start included) {fmt_time(np.mean([r[2] for r in runs['k-means||']]))} against "
        f"{fmt_time(np.mean([r[2] for r in runs['k-means++']]))}",
    )


# ---------------------------------------------------------------------- the generated sets


def _generated(b) -> None:
    from bench import fmt_ratio, fmt_time, verdict

    sizes = QUICK_SIZES if b.quick else SIZES
    path = _generated_set(b, max(sizes))
    per_gb = {}
    starts = {}
    for rows in sizes:
        data_bytes = rows * 784
        measured = {
            what: _measure(path, rows, 10, what)
            for what in ("iterations", "converge", "k-means++", "k-means||")
        }
        its = measured["iterations"]
        fit = measured["converge"]
        per_iteration = its["seconds"] / its["n_iter"]
        per_gb[rows] = per_iteration / (data_bytes / 1e9)
        peak = max(m["peak"] for m in measured.values())
        starts[rows] = (measured["k-means++"]["seconds"], measured["k-means||"]["seconds"])
        b.add(
            "scale",
            f"generated N={rows:,} x 784 ({data_bytes / 1e9:.2f} GB uint8, memory-mapped .npy), K=10",
            ours=f"{fmt_time(per_iteration)} / it",
            **{"iter ours/ref": f"{fit['n_iter']}/-"},
            notes=f"20 iterations (tol=0) {fmt_time(its['seconds'])}; fit to convergence (tol=1e-4) "
            f"{fmt_time(fit['seconds'])}, {fit['n_iter']} iterations; start: k-means++ "
            f"{fmt_time(starts[rows][0])}, k-means|| {fmt_time(starts[rows][1])}; peak private memory "
            f"(RssAnon) {peak / 1e6:.0f} MB = {peak / data_bytes:.3f}x the data; one run each, fresh process",
        )
    smallest, largest = min(sizes), max(sizes)
    b.add(
        "scale",
        f"generated: growth of the time per iteration, N={smallest:,} to {largest:,}",
        ours=f"{per_gb[largest] / per_gb[smallest]:.2f}",
        notes="time per iteration per GB of data at the largest size over the same at the smallest "
        "(1.00: linear in N); per GB: " + ", ".join(f"{rows:,}: {fmt_time(s)}" for rows, s in per_gb.items()),
    )
    plus, parallel = starts[largest]
    b.add(
        "scale",
        f"generated N={largest:,}, K=10: k-means|| start against k-means++'s",
        ours=fmt_time(parallel),
        reference=fmt_time(plus),
        **{"ours/ref": fmt_ratio(parallel, plus)},
        target=f"< 0.25x: {verdict(parallel < 0.25 * plus)}",
        notes="k-means||: 5 rounds of ~2K candidates, 6 passes over the data, ~101 distances a row; "
        "k-means++: K = 10 passes, 2 + ln K = 4 candidates each after the first, 37 distances a row",
    )
    sklearn_plus = _measure(path, smallest, 10, "sklearn-k-means++")["seconds"]
    plus, parallel = starts[smallest]
    b.add(
        "scale",
        f"generated N={smallest:,}, K=10: our starts against scikit-learn's kmeans_plusplus",
        ours=f"{fmt_time(parallel)} / {fmt_time(plus)}",
        reference=fmt_time(sklearn_plus),
        **{"ours/ref": f"{fmt_ratio(parallel, sklearn_plus)} / {fmt_ratio(plus, sklearn_plus)}"},
        notes="k-means|| / our k-means++, against sklearn.cluster.kmeans_plusplus on the float32 copy "
        "(the copy not in its time): K passes as ours, 4 candidates in each after the first, its "
        "float32 distances computed in float64 chunks; the smallest set only (its copy fits)",
    )
    ref = _measure(path, smallest, 10, "sklearn")
    ours = _measure(path, smallest, 10, "iterations")
    b.add(
        "scale",
        f"generated N={smallest:,}, K=10: 20 iterations (tol=0), ours against scikit-learn",
        ours=f"{fmt_time(ours['seconds'] / ours['n_iter'])} / it",
        reference=f"{fmt_time(ref['seconds'] / ref['n_iter'])} / it",
        **{"ours/ref": fmt_ratio(ours["seconds"] / ours["n_iter"], ref["seconds"] / ref["n_iter"])},
        notes=f"same start; peak private memory: ours {ours['peak'] / 1e6:.0f} MB, scikit-learn "
        f"{ref['peak'] / 1e6:.0f} MB (its float32 copy of X is {smallest * 784 * 4 / 1e9:.1f} GB; at "
        f"N={FULL_ROWS:,} it would be {FULL_ROWS * 784 * 4 / 1e9:.1f} GB plus its work: not run)",
    )


def _generated_set(b, rows: int) -> Path:
    """The generated set of `rows` rows in the bench's scale folder, written once."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench import fmt_time
    from mnist8m import DEFAULT_SEED, write_set

    folder = b.scale_dir or b.workdir
    path = Path(folder) / f"mnist8m-{rows}.npy"
    if not path.exists():
        started = time.perf_counter()
        write_set(path, rows, seed=DEFAULT_SEED, threads=os.cpu_count() or 1, progress=False)
        b.add(
            "scale",
            f"generator: bench/mnist8m.py N={rows:,} x 784",
            ours=fmt_time(time.perf_counter() - started),
            notes=f"{path.stat().st_size / 1e9:.2f} GB written (images .npy + labels), seed {DEFAULT_SEED}; target 5 min",
        )
    return path


def _measure(path: Path, rows: int, k: int, what: str) -> dict:
    """One measurement in a fresh process; its result and peak private memory (bytes)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(rows), str(k), what, str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    status = Path(f"/proc/{child.pid}/status")
    while child.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(POLL_SECONDS)
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{what} on {rows:,} rows exited {child.returncode}: {err.strip()[-500:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak"] = peak
    print(f"  {what} N={rows:,}: {result}", file=sys.stderr)
    return result
