#!/usr/bin/env python3
"""Benchmark kmeans-mnist against scikit-learn: speed, agreement, memory, growth, start-up, end to end.

    python bench/bench.py [--quick] [--repeats N] [--only fit,sweep,...] [--out FILE.md]

Prints one markdown table (progress goes to stderr) and writes it to bench/results/latest.md, or
to --out. Timings are medians; ours and scikit-learn run alternately in this one process, from the
same initial centres, to convergence under the same rule. `--quick` runs tiny sizes to check that
the script works: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import gc
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sklearn
from sklearn.cluster import KMeans as SkKMeans
from threadpoolctl import threadpool_limits

from bench_dask import bench_dask
from bench_scale import bench_scale
from kmeans_mnist.data.datasets import KAGGLE, load_dataset
from kmeans_mnist.engine.estimator import KMeans

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.md"
SECTIONS = ("fit", "sweep", "memory", "growth", "startup", "e2e", "budget", "original", "dask", "scale")
# skipped without ../shared/datasets
DATA_SECTIONS = ("fit", "sweep", "memory", "e2e", "budget", "original", "dask", "scale")
KAGGLE_SECTIONS = (*DATA_SECTIONS, "startup")  # need the kagglehub cache (startup: for its load rows)
COLUMNS = (
    "section",
    "case",
    "ours",
    "reference",
    "ours/ref",
    "labels identical",
    "inertia rel. diff",
    "iter ours/ref",
    "oneDAL",
    "faiss",
    "target",
    "notes",
)
FULL_ROWS = 70_000
PIXELS = 784
QUICK_LIMIT = 5_000
TIME_BIN = Path("/usr/bin/time")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# What a typical user writes with scikit-learn: run as `python -c` with CSV folder, output folder, max rows.
SKLEARN_SCRIPT = """
import json, sys, time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.cluster import KMeans

folder, out, max_rows = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) or None
started = time.perf_counter()
parts = [
    np.loadtxt(folder / name, delimiter=",", skiprows=1, dtype=np.uint8, max_rows=max_rows)
    for name in ("fashion-mnist_train.csv", "fashion-mnist_test.csv")
]
X = np.concatenate(parts)[:, 1:].astype(np.float32)
loaded = time.perf_counter()
model = KMeans(10, n_init=1, random_state=0).fit(X)
fitted = time.perf_counter()
out.mkdir(parents=True, exist_ok=True)
for i, centre in enumerate(model.cluster_centers_):
    pixels = np.clip(np.rint(centre), 0, 255).astype(np.uint8).reshape(28, 28)
    Image.fromarray(pixels).save(out / f"centroid_{i}.png")
written = time.perf_counter()
print(json.dumps({"load": loaded - started, "fit": fitted - loaded, "write": written - fitted, "n_iter": int(model.n_iter_)}))
"""

# The load step of the command line, timed in a fresh process (the CLI imports datasets first, too).
LOAD_SCRIPT = """
import time
from kmeans_mnist.data.datasets import load_dataset
started = time.perf_counter()
load_dataset("fashion")
print(time.perf_counter() - started)
"""

# Fallback peak-memory probe: a fresh parent whose only child is the measured command.
RSS_SCRIPT = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@dataclass
class Bench:
    """Settings and shared state of one benchmark run."""

    quick: bool
    repeats: int
    big_repeats: int
    e2e_repeats: int
    help_runs: int
    workdir: Path
    env: dict[str, str]  # for subprocesses: KAGGLEHUB_CACHE, thread limits
    have_data: bool
    warm_cache: Path
    scale_dir: Path | None = None  # where the scale section writes its 6.35 GB set (default: workdir)
    rows: list[dict[str, str]] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def limit(self) -> int | None:
        return QUICK_LIMIT if self.quick else None

    def data(self, name: str) -> np.ndarray:
        """Real images as N x D uint8, loaded once through the warm parsed cache (limited in quick mode)."""
        if name not in self.arrays:
            data_dir = SHARED / "usps-sheets" if name == "usps" else None
            limit = None if name == "usps" else self.limit
            self.arrays[name] = load_dataset(
                name, data_dir=data_dir, limit=limit, cache_dir=self.warm_cache
            ).all_pixel
        return self.arrays[name]

    def add(self, section: str, case: str, **cells: str) -> None:
        """Append one table row and echo it to stderr."""
        row = {"section": section, "case": case, **cells}
        self.rows.append(row)
        print("  " + " | ".join(f"{key}={value}" for key, value in row.items() if value), file=sys.stderr)


# ---------------------------------------------------------------------- helpers


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.3g}" if ref > 0 else "-"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def timed(run: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call (after a garbage collection), and its result."""
    gc.collect()
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def run_child(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
    """Run a command to completion; its wall time and result. Raises with its stderr if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])}... exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    return seconds, done


def pick_init(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K distinct rows of x chosen with a seeded RNG, as float64: the shared starting centres."""
    rows = np.random.default_rng(seed).choice(len(x), size=k, replace=False)
    return x[rows].astype(np.float64)


def synthetic_blobs(n: int, seed: int = 0, prototypes: int = 10, chunk: int = 50_000) -> np.ndarray:
    """n x 784 uint8: overlapping blobs (prototypes near grey 128, noise ±100), built in chunks.

    Overlap keeps Lloyd moving labels for many iterations, so tol=0, max_iter=10 runs do all 10.
    """
    rng = np.random.default_rng(seed)
    centres = rng.integers(118, 139, size=(prototypes, PIXELS), dtype=np.int16)
    out = np.empty((n, PIXELS), dtype=np.uint8)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng.integers(-100, 101, size=(stop - start, PIXELS), dtype=np.int16)
        block += centres[rng.integers(0, prototypes, size=stop - start)]
        np.clip(block, 0, 255, out=block)
        out[start:stop] = block
    return out


@dataclass
class Pair:
    """Times and agreement of ours vs scikit-learn over repeated fits."""

    ours: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    ours_iter: list[int] = field(default_factory=list)
    ref_iter: list[int] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    inertia_diff: list[float] = field(default_factory=list)
    # Agreement with scikit-learn run in float64 (untimed): the labels exact arithmetic gives.
    ours_exact: list[float] = field(default_factory=list)
    ref_exact: list[float] = field(default_factory=list)
    # Other implementations from the same start (see PEERS): name -> times, agreement with scikit-learn
    peer_times: dict[str, list[float]] = field(default_factory=dict)
    peer_agreement: dict[str, list[float]] = field(default_factory=dict)
    peer_missing: dict[str, str] = field(default_factory=dict)

    def cells(self, per_iteration: bool = False) -> dict[str, str]:
        """Table cells: median times (or median time per iteration), worst agreement, iterations."""
        ours, ref = self.ours, self.ref
        if per_iteration:
            ours = [t / n for t, n in zip(ours, self.ours_iter, strict=True)]
            ref = [t / n for t, n in zip(ref, self.ref_iter, strict=True)]
        ours_s, ref_s = statistics.median(ours), statistics.median(ref)
        return {
            "ours": fmt_time(ours_s),
            "reference": fmt_time(ref_s),
            "ours/ref": fmt_ratio(ours_s, ref_s),
            "labels identical": f"{min(self.agreement):.3f} %",
            "inertia rel. diff": f"{max(self.inertia_diff):.1e}",
            "iter ours/ref": f"{statistics.median(self.ours_iter):g}/{statistics.median(self.ref_iter):g}",
        }

    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.ref)

    def peer_cells(self) -> dict[str, str]:
        """Per peer: its median time, ours/its ratio, worst label agreement with scikit-learn."""
        cells = dict(self.peer_missing)
        ours = statistics.median(self.ours)
        for name, times in self.peer_times.items():
            peer = statistics.median(times)
            agreement = min(self.peer_agreement[name])
            cells[name] = f"{fmt_time(peer)} (ours/it {fmt_ratio(ours, peer)}, labels {agreement:.3f} %)"
        return cells


def dal_fit(x32: np.ndarray, init: np.ndarray, max_iter: int, tol: float, ref_iter: int):
    """Intel's oneDAL KMeans (scikit-learn-intelex), scikit-learn's parameters and rule."""
    from sklearnex.cluster import KMeans as DalKMeans

    model = DalKMeans(len(init), init=init, n_init=1, max_iter=max_iter, tol=tol, algorithm="lloyd").fit(x32)
    return model.labels_, float(model.inertia_)


def faiss_fit(x32: np.ndarray, init: np.ndarray, max_iter: int, tol: float, ref_iter: int):
    """faiss's Kmeans on all points (no subsampling), then its index assigns the labels. faiss has
    no stopping rule: it runs the iterations scikit-learn took from this start."""
    import faiss

    model = faiss.Kmeans(x32.shape[1], len(init), niter=ref_iter, max_points_per_centroid=len(x32), seed=0)
    model.train(x32, init_centroids=init.astype(np.float32))
    distances, labels = model.index.search(x32, 1)
    return labels[:, 0], float(distances.sum(dtype=np.float64))


PEERS = {"oneDAL": ("sklearnex", dal_fit), "faiss": ("faiss", faiss_fit)}  # pip install -e ".[bench]"


def compare(
    x: np.ndarray,
    k: int,
    seeds: range,
    *,
    tol: float = 1e-4,
    max_iter: int = 300,
    exact: bool = False,
    peers: bool = False,
) -> Pair:
    """Fit ours (on uint8) and scikit-learn (lloyd, on float32) alternately, one seed of shared init per repeat.

    The float32 copy for scikit-learn is made once, outside the timing; ours converts inside its fit.
    Which side goes first alternates between repeats; one untimed fit of each comes first, so
    neither pays for the process's first touch of fresh memory. With `exact`, scikit-learn also
    fits in float64 (untimed): the labels exact arithmetic gives, to compare both against. With
    `peers`, oneDAL and faiss (when installed) also fit each start, on the float32 copy, timed.
    """
    x32 = x.astype(np.float32)
    warm = pick_init(x, k, 10_000)
    KMeans(k, init=warm, max_iter=3).fit(x)
    SkKMeans(k, init=warm, n_init=1, max_iter=3, algorithm="lloyd").fit(x32)
    pair = Pair()
    peer_fits = {}
    for name, (module, fit) in PEERS.items() if peers else ():
        try:
            __import__(module)
        except ImportError:
            pair.peer_missing[name] = f"{module} not installed"
            continue
        fit(x32, warm, 3, tol, 3)  # untimed, as above
        peer_fits[name] = fit
        pair.peer_times[name], pair.peer_agreement[name] = [], []
    for repeat, seed in enumerate(seeds):
        init = pick_init(x, k, seed)
        ours_fit = KMeans(k, init=init, n_init=1, max_iter=max_iter, tol=tol).fit
        ref_fit = SkKMeans(k, init=init, n_init=1, max_iter=max_iter, tol=tol, algorithm="lloyd").fit
        if repeat % 2:
            ref_s, ref = timed(lambda fit=ref_fit: fit(x32))
            ours_s, ours = timed(lambda fit=ours_fit: fit(x))
        else:
            ours_s, ours = timed(lambda fit=ours_fit: fit(x))
            ref_s, ref = timed(lambda fit=ref_fit: fit(x32))
        pair.ours.append(ours_s)
        pair.ref.append(ref_s)
        pair.ours_iter.append(ours.n_iter_)
        pair.ref_iter.append(ref.n_iter_)
        pair.agreement.append(100.0 * float(np.mean(ours.labels_ == ref.labels_)))
        pair.inertia_diff.append(abs(ours.inertia_ - ref.inertia_) / ref.inertia_)
        for name, fit in peer_fits.items():
            run = functools.partial(fit, x32, init, max_iter, tol, int(ref.n_iter_))
            peer_s, (labels, _) = timed(run)
            pair.peer_times[name].append(peer_s)
            pair.peer_agreement[name].append(100.0 * float(np.mean(labels == ref.labels_)))
        if exact:
            ref64 = SkKMeans(k, init=init, n_init=1, max_iter=max_iter, tol=tol, algorithm="lloyd")
            labels64 = ref64.fit(x.astype(np.float64)).labels_
            pair.ours_exact.append(100.0 * float(np.mean(ours.labels_ == labels64)))
            pair.ref_exact.append(100.0 * float(np.mean(ref.labels_ == labels64)))
    return pair


def peak_rss_bytes(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Peak resident memory of a command: /usr/bin/time -v if present, else a fresh parent's RUSAGE_CHILDREN."""
    if TIME_BIN.exists():
        _, done = run_child([str(TIME_BIN), "-v", *command], env)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        if found:
            return int(found.group(1)) * 1024, "/usr/bin/time -v"
    _, done = run_child([sys.executable, "-c", RSS_SCRIPT, *command], env)
    return int(done.stdout.split()[-1]) * 1024, "getrusage(RUSAGE_CHILDREN)"


def cli_command(output: Path, limit: int | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "kmeans_mnist",
        "10",
        "--dataset",
        "fashion",
        "--quiet",
        "--output",
        str(output),
    ]
    return [*command, "--limit", str(limit)] if limit else command


# ---------------------------------------------------------------------- sections


def bench_fit(b: Bench) -> None:
    """1. K=10 on MNIST and Fashion (70k): one seed of shared initial centres per repeat."""
    for name in ("mnist", "fashion"):
        x = b.data(name)
        pair = compare(x, 10, range(b.repeats), exact=True, peers=True)
        ok = pair.ratio() <= 0.5 and min(pair.agreement) >= 99.9 and max(pair.inertia_diff) <= 1e-5
        b.add(
            "fit",
            f"{name} N={len(x):,} K=10",
            **pair.cells(),
            **pair.peer_cells(),
            target=f"ratio <= 0.5, labels >= 99.9 %, inertia <= 1e-5: {verdict(ok)}",
            notes=f"median of {b.repeats}, seeds 0-{b.repeats - 1}; worst agreement, largest inertia diff; "
            f"labels identical to scikit-learn's float64 run (exact arithmetic): ours >= {min(pair.ours_exact):.3f} %, "
            f"scikit-learn float32 >= {min(pair.ref_exact):.3f} %",
        )


def bench_sweep(b: Bench) -> None:
    """2. K sweeps: usps K=3..7 (--repeats), MNIST K=10, 20, 50 (--big-repeats)."""
    for name, ks, repeats in (("usps", range(3, 8), b.repeats), ("mnist", (10, 20, 50), b.big_repeats)):
        x = b.data(name)
        for k in ks:
            pair = compare(x, k, range(repeats))
            b.add("sweep", f"{name} N={len(x):,} K={k}", **pair.cells(), notes=f"median of {repeats}")


def bench_memory(b: Bench) -> None:
    """3. Peak resident memory of a whole command-line run on Fashion, parsed cache warm."""
    n = len(b.data("fashion"))  # also warms the parsed cache
    env = {**b.env, "KMEANS_MNIST_CACHE": str(b.warm_cache)}
    rss, how = peak_rss_bytes(cli_command(b.workdir / "memory-output", b.limit), env)
    data_bytes = n * PIXELS * 4
    ratio = rss / data_bytes
    b.add(
        "memory",
        f"`python -m kmeans_mnist 10 --dataset fashion` N={n:,}",
        ours=f"{rss / 1e6:.0f} MB",
        reference=f"{data_bytes / 1e6:.1f} MB",
        **{"ours/ref": f"{ratio:.2f}x"},
        target=f"<= 2.5x: {verdict(ratio <= 2.5)}",
        notes=f"peak RSS ({how}) vs the float32 data size N x 784 x 4 B; warm caches",
    )


def bench_growth(b: Bench) -> None:
    """4. Time per iteration as N and K grow: tol=0, max_iter=10, shared random init (fixed iteration count)."""
    fixed = (
        "per iteration = fit time / n_iter; tol=0, max_iter=10 from a shared random init, so every run does 10 "
        "iterations (fewer only if labels stop changing: see iter column)"
    )
    sizes = (5_000, 10_000, 20_000) if b.quick else (10_000, 100_000, 1_000_000)
    for n in sizes:
        x = synthetic_blobs(n)
        if n <= 100_000:
            cells = compare(x, 10, range(b.big_repeats), tol=0.0, max_iter=10).cells(per_iteration=True)
        else:
            times, iters = [], []
            for seed in range(b.big_repeats):
                fit = KMeans(10, init=pick_init(x, 10, seed), n_init=1, max_iter=10, tol=0.0).fit
                seconds, model = timed(lambda fit=fit, x=x: fit(x))
                times.append(seconds / model.n_iter_)
                iters.append(model.n_iter_)
            cells = {
                "ours": fmt_time(statistics.median(times)),
                "iter ours/ref": f"{statistics.median(iters):g}/-",
            }
        extra = "" if n <= 100_000 else "; scikit-learn not run above N=100k"
        b.add("growth", f"synthetic N={n:,} x 784, K=10", **cells, notes=f"{fixed}{extra}")
        del x
        gc.collect()
    if b.have_data:
        x, source = b.data("mnist"), "MNIST"
    else:
        x, source = synthetic_blobs(QUICK_LIMIT if b.quick else FULL_ROWS), "synthetic"
    for k in (10, 32, 64, 128, 256):
        pair = compare(x, k, range(b.big_repeats), tol=0.0, max_iter=10)
        b.add(
            "growth",
            f"{source} N={len(x):,}, K={k}",
            **pair.cells(per_iteration=True),
            notes=fixed,
        )


def bench_startup(b: Bench) -> None:
    """5. `--help` wall time in a fresh process; load time of fashion from the warm and the cold parsed cache."""
    help_times = [
        run_child([sys.executable, "-m", "kmeans_mnist", "--help"], b.env)[0] for _ in range(b.help_runs)
    ]
    seconds = statistics.median(help_times)
    b.add(
        "startup",
        "`python -m kmeans_mnist --help`",
        ours=fmt_time(seconds),
        target=f"< 0.3 s: {verdict(seconds < 0.3)}",
        notes=f"wall time of a fresh process, median of {b.help_runs}",
    )
    if not b.have_data:
        b.add("startup", "load fashion", notes=f"skipped: {SHARED} not found")
        return
    b.data("fashion")  # warm the parsed cache
    load = [sys.executable, "-c", LOAD_SCRIPT]
    warm = [
        float(run_child(load, {**b.env, "KMEANS_MNIST_CACHE": str(b.warm_cache)})[1].stdout)
        for _ in range(b.repeats)
    ]
    cold = []
    for repeat in range(b.repeats):
        fresh = b.workdir / f"cold-load-{repeat}"
        cold.append(float(run_child(load, {**b.env, "KMEANS_MNIST_CACHE": str(fresh)})[1].stdout))
        shutil.rmtree(fresh, ignore_errors=True)
    seconds = statistics.median(warm)
    how = f"load_dataset('fashion') via kagglehub, fresh process, median of {b.repeats}"
    b.add(
        "startup",
        "load fashion 70k, parsed cache warm",
        ours=fmt_time(seconds),
        target=f"< 0.5 s: {verdict(seconds < 0.5)}",
        notes=how,
    )
    b.add(
        "startup",
        "load fashion 70k, parsed cache cold (CSV parse)",
        ours=fmt_time(statistics.median(cold)),
        notes=f"{how}; for reference",
    )


def bench_e2e(b: Bench) -> None:
    """6. Whole runs on Fashion, K=10: our command line (parsed cache cold, then warm) vs a typical scikit-learn script."""
    csv_dir = (
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import kagglehub; print(kagglehub.dataset_download({KAGGLE['fashion'].handle!r}))",
            ],
            env=b.env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    b.data("fashion")  # warm the parsed cache
    runs: dict[str, list[tuple[float, dict]]] = {"cold": [], "warm": [], "sklearn": []}
    max_rows = str(b.limit // 2 if b.limit else 0)
    for repeat in range(b.e2e_repeats):
        for case in ("cold", "warm", "sklearn"):
            out = b.workdir / f"e2e-{case}-{repeat}"
            if case == "sklearn":
                seconds, done = run_child(
                    [sys.executable, "-c", SKLEARN_SCRIPT, csv_dir, str(out), max_rows], b.env
                )
                parts = json.loads(done.stdout.strip().splitlines()[-1])
            else:
                cache = b.workdir / f"e2e-cache-{repeat}" if case == "cold" else b.warm_cache
                seconds, _ = run_child(cli_command(out, b.limit), {**b.env, "KMEANS_MNIST_CACHE": str(cache)})
                parts = json.loads((out / "fashion" / "k10" / "summary.json").read_text())["seconds"]
            runs[case].append((seconds, parts))
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(b.workdir / f"e2e-cache-{repeat}", ignore_errors=True)

    def median_parts(case: str) -> str:
        return " / ".join(
            f"{statistics.median(p[name] for _, p in runs[case]):.2f}" for name in ("load", "fit", "write")
        )

    ref = statistics.median(s for s, _ in runs["sklearn"])
    size = f" (ours --limit {b.limit}, sklearn {b.limit} rows)" if b.limit else " 70k"
    for case in ("cold", "warm"):
        ours = statistics.median(s for s, _ in runs[case])
        b.add(
            "e2e",
            f"fashion{size} K=10, parsed cache {case}",
            ours=fmt_time(ours),
            reference=fmt_time(ref),
            **{"ours/ref": fmt_ratio(ours, ref)},
            notes=f"total wall; load/fit/write s: ours {median_parts(case)}, sklearn script {median_parts('sklearn')}; "
            f"kagglehub cache warm; k-means++ seed 0 on both sides (inits differ); median of {b.e2e_repeats}",
        )


def bench_budget(b: Bench) -> None:
    """7. The pictures' budget: the whole USPS K=3..7 command (warm), and the write phase of MNIST K=10 against its fit."""
    usps = [sys.executable, "-m", "kmeans_mnist", "3", "4", "5", "6", "7", "--dataset", "usps"]
    usps += ["--data-dir", str(SHARED / "usps-sheets"), "--quiet", "--output"]
    run_child([*usps, str(b.workdir / "budget-warm-up")], b.env)  # warm the OS caches and .pyc files
    walls, cpus = [], []
    for repeat in range(b.repeats):
        out = b.workdir / f"budget-usps-{repeat}"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(run_child([*usps, str(out)], b.env)[0])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        shutil.rmtree(out, ignore_errors=True)
    seconds = statistics.median(walls)
    b.add(
        "budget",
        "`python -m kmeans_mnist 3 4 5 6 7 --dataset usps` (warm)",
        ours=fmt_time(seconds),
        target=f"<= 1.5 s: {verdict(seconds <= 1.5)}",
        notes=f"whole command, every file, chart and report.html written; wall time, median of {b.repeats} "
        f"(CPU time {fmt_time(statistics.median(cpus))}: close to the wall time of an idle machine)",
    )
    b.data("mnist")  # warm the parsed cache
    mnist = [sys.executable, "-m", "kmeans_mnist", "10", "--quiet", "--output"]
    if b.limit:
        mnist = [*mnist[:-1], "--limit", str(b.limit), "--output"]
    parts = []
    for repeat in range(b.e2e_repeats):
        out = b.workdir / f"budget-mnist-{repeat}"
        run_child([*mnist, str(out)], {**b.env, "KMEANS_MNIST_CACHE": str(b.warm_cache)})
        summary = next(out.glob("*/k10/summary.json"))
        parts.append(json.loads(summary.read_text())["seconds"])
        shutil.rmtree(out, ignore_errors=True)
    write = statistics.median(p["write"] for p in parts)
    fit = statistics.median(p["fit"] for p in parts)
    b.add(
        "budget",
        f"mnist {f'--limit {b.limit}' if b.limit else '70k'} K=10: write phase vs fit",
        ours=fmt_time(write),
        reference=fmt_time(fit),
        **{"ours/ref": fmt_ratio(write, fit)},
        target=f"write <= fit: {verdict(write <= fit)}",
        notes=f"seconds.write and seconds.fit of summary.json (reference: the fit); median of {b.e2e_repeats}",
    )


def original_iteration(all_pixel: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """One iteration of the original project's algorithm: per point, a Python loop over the K representatives."""
    G: list[list[np.ndarray]] = [[] for _ in range(len(Z))]
    for point in all_pixel:
        nearest, best = 0, np.inf
        for j in range(len(Z)):
            distance = np.linalg.norm(point - Z[j])
            if distance < best:
                nearest, best = j, distance
        G[nearest].append(point)
    return np.array([np.mean(G[j], axis=0) if G[j] else Z[j] for j in range(len(Z))])


def bench_original(b: Bench) -> None:
    """7. The original per-point algorithm (one iteration on a subset, extrapolated) vs ours per iteration."""
    x = b.data("fashion")
    n = 500 if b.quick else 2_000
    subset = x[:n].astype(np.float64)
    start = pick_init(subset, 10, 0)
    original = [timed(lambda: original_iteration(subset, start))[0] for _ in range(b.repeats)]
    original_full = statistics.median(original) * len(x) / n
    ours = []
    for seed in range(b.big_repeats):
        fit = KMeans(10, init=pick_init(x, 10, seed), n_init=1).fit
        seconds, model = timed(lambda fit=fit: fit(x))
        ours.append(seconds / model.n_iter_)
    per_iter = statistics.median(ours)
    b.add(
        "original",
        f"fashion, one iteration at N={len(x):,}, K=10",
        ours=fmt_time(per_iter),
        reference=fmt_time(original_full),
        **{"ours/ref": f"{per_iter / original_full:.2g}"},
        notes=f"reference: original per-point loop (float64) timed on {n:,} images x {len(x) / n:g}, median of "
        f"{b.repeats}; ours: fit time / n_iter to convergence, median of {b.big_repeats}",
    )


# ---------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, 1 repeat: checks the script, figures meaningless"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default 5; quick 1)")
    parser.add_argument(
        "--big-repeats",
        type=int,
        help="repeats for MNIST K sweep, growth, ours per iteration (default 3; quick 1)",
    )
    parser.add_argument("--e2e-repeats", type=int, help="repeats of each end-to-end run (default 3; quick 1)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections out of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--threads", type=int, help="limit BLAS/OpenMP threads on both sides (default: all cores)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file for the table")
    parser.add_argument(
        "--scale-dir", type=Path, help="folder for the scale section's generated set (6.35 GB; kept if given)"
    )
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {','.join(SECTIONS)}")
    for name, full, quick in (("repeats", 5, 1), ("big_repeats", 3, 1), ("e2e_repeats", 3, 1)):
        value = getattr(args, name)
        if value is None:
            setattr(args, name, quick if args.quick else full)
        elif value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def header(args: argparse.Namespace) -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else []
    cpu = names[0].strip() if names else platform.processor() or "unknown CPU"
    threads = f", {args.threads} thread(s)" if args.threads else ""
    mode = " | QUICK MODE: tiny sizes, figures meaningless" if args.quick else ""
    return (
        f"{datetime.datetime.now().isoformat(timespec='minutes')} | {cpu}, {os.cpu_count()} cores{threads} | "
        f"Python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}{mode}"
    )


def markdown(head: str, rows: list[dict[str, str]]) -> str:
    lines = [head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    # A "|" inside a cell (k-means||) would end it: markdown tables take it escaped.
    lines += [
        "| " + " | ".join((row.get(column, "") or "").replace("|", "\\|") for column in COLUMNS) + " |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def prepare_kaggle_cache(workdir: Path) -> str:
    """$KAGGLEHUB_CACHE when set, else a kagglehub cache built from ../shared/datasets in workdir."""
    ready = os.environ.get("KAGGLEHUB_CACHE")
    if ready and Path(ready).is_dir():
        return ready
    built = workdir / "kagglehub"
    print(f"KAGGLEHUB_CACHE not set: building one in {built}", file=sys.stderr)
    subprocess.run(
        [sys.executable, str(SHARED / "make_kaggle_cache.py"), str(built)], check=True, capture_output=True
    )
    return str(built)


def main() -> int:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kmeans-bench-"))
    env = dict(os.environ)
    if args.threads:
        env.update({name: str(args.threads) for name in THREAD_VARS})
    have_data = (SHARED / "make_kaggle_cache.py").is_file()
    if not have_data:
        print(f"{SHARED} not found: real-data sections are skipped", file=sys.stderr)
    elif any(name in KAGGLE_SECTIONS for name in args.only):
        env["KAGGLEHUB_CACHE"] = os.environ["KAGGLEHUB_CACHE"] = prepare_kaggle_cache(workdir)
    b = Bench(
        quick=args.quick,
        repeats=args.repeats,
        big_repeats=args.big_repeats,
        e2e_repeats=args.e2e_repeats,
        help_runs=3 if args.quick else 10,
        workdir=workdir,
        env=env,
        have_data=have_data,
        warm_cache=workdir / "parsed-warm",
        scale_dir=args.scale_dir,
    )
    sections = {
        "fit": bench_fit,
        "sweep": bench_sweep,
        "memory": bench_memory,
        "growth": bench_growth,
        "startup": bench_startup,
        "e2e": bench_e2e,
        "budget": bench_budget,
        "original": bench_original,
        "dask": bench_dask,  # bench_dask.py: needs the bench extra (dask, distributed, dask-ml)
        "scale": bench_scale,  # bench_scale.py: the generated 1M-8.1M sets, early iterations, starts
    }
    head = header(args)
    try:
        with threadpool_limits(limits=args.threads):
            for name in args.only:
                print(f"[{name}] {sections[name].__doc__.splitlines()[0]}", file=sys.stderr)
                if name in DATA_SECTIONS and not have_data:
                    b.add(name, "skipped", notes=f"{SHARED} not found")
                    continue
                started = time.perf_counter()
                try:
                    sections[name](b)
                except Exception as error:  # one failing section must not lose the others' figures
                    traceback.print_exc()
                    b.add(name, "FAILED", notes=f"{type(error).__name__}: {error}"[:300].replace("|", "/"))
                print(f"[{name}] {time.perf_counter() - started:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = markdown(head, b.rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(f"table written to {args.out}", file=sys.stderr)
    return 0 if all(row["case"] != "FAILED" for row in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
