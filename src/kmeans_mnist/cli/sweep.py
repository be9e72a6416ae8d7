"""One sweep over K on data loaded once, into one experiment folder (summary.Experiment).

For each K: fit `repeats` times (seeds seed, seed+1, ...), score every fit (inertia, silhouette,
Calinski-Harabasz, Davies-Bouldin; purity, accuracy, NMI, ARI when labels are known), write the
lowest-inertia fit's files with the mean ± std of every score and the stability (mean pairwise
ARI between the repeats), then swap its k<K> folder in and rebuild the summary in one locked
step with SIGINT/SIGTERM held back. After the last K, the K-choice chart is drawn once.

Knows nothing of arguments or exit codes: failures are raised (WriteFailed, SummaryFailed,
summary.SummaryError) and the caller words them. `Sweep.saved` lists, at every moment, the K
whose folder and summary row are both in place, so an interrupted caller can say which.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Settings:
    """How each K is fitted and what is written for it."""

    init: str = "k-means++"
    n_init: int = 1
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 0
    repeats: int = 1
    scheduler: str | None = None  # fit on the Dask cluster the command line connected to
    samples: int = 64
    export_members: bool = False


@dataclass(frozen=True)
class Selection:
    """Which images of the dataset were loaded (part of what makes an experiment)."""

    split: str = "all"
    limit: int | None = None
    keep_blank: bool = False


@dataclass
class KResult:
    """One K that was fitted and saved: its summary row, its folder, and notes for the table."""

    k: int
    row: dict
    folder: Path
    converged: bool
    reseeds: int


class WriteFailed(Exception):
    """Writing the k<K> folder failed (an OSError); that K's earlier results are unchanged."""

    def __init__(self, k: int, target: Path, error: OSError):
        super().__init__(f"could not write the results of K={k} to {target}: {error}")
        self.k, self.target, self.error = k, target, error


class SummaryFailed(Exception):
    """Updating the experiment's summary failed (OSError or SummaryError). swapped: whether the
    new k<K> folder was already in place (then the next run mends the summary)."""

    def __init__(self, k: int, folder: Path, summary: Path, error: Exception, swapped: bool = False):
        super().__init__(f"could not update {summary}: {error}")
        self.k, self.folder, self.summary, self.error, self.swapped = k, folder, summary, error, swapped


# progress(k, repeat) -> a context manager yielding the fit's per-iteration callback (or None)
ProgressFactory = Callable[[int, int], contextlib.AbstractContextManager]


def new_run_id() -> str:
    """When and which process: 20261130T174501Z-12345-a1b2c3, recorded in every folder and row."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}-{secrets.token_hex(3)}"


def data_digest(data) -> str:
    """sha256 of the images and labels: tells whether two runs clustered the same images."""
    digest = hashlib.sha256(repr(tuple(data.images.shape)).encode())
    digest.update(np.ascontiguousarray(data.images).data)
    if data.labels is not None:
        digest.update(np.ascontiguousarray(data.labels, dtype=np.int64).data)
    return "sha256:" + digest.hexdigest()


@dataclass
class Sweep:
    """Cluster `data` for each K in turn into root/<experiment>/; check(), run(), finish()."""

    root: Path
    data: object
    settings: Settings
    selection: Selection = field(default_factory=Selection)
    load_seconds: float = 0.0
    progress: ProgressFactory | None = None
    saved: list[KResult] = field(default_factory=list)
    on_saved: Callable[[KResult], None] | None = None  # told as soon as each K is saved
    rows: list[dict] = field(default_factory=list)  # summary rows of the folder, once drawn
    drawn: bool = False  # the chart shows every saved K
    features: object = None  # features.Features: the space K-means runs in (None: the pixels)

    def __post_init__(self) -> None:
        from ..results.experiment import Experiment, experiment_name
        from ..results.run import text_safe

        s, selection = self.settings, self.selection
        run_settings = {
            "split": selection.split,
            "limit": selection.limit,
            "keep_blank": selection.keep_blank,
            "init": s.init,
            "n_init": s.n_init,
            "max_iter": s.max_iter,
            "tol": s.tol,
            "repeats": s.repeats,
            "features": self.features.space.text if self.features is not None else "pixels",
        }
        self.run_id = new_run_id()
        self.record = {
            "dataset": self.data.name,
            "source": text_safe(self.data.source),
            "n_images": len(self.data.images),
            "image_shape": [int(n) for n in self.data.image_shape],
            **run_settings,
            "data_digest": data_digest(self.data),
        }
        folder = Path(self.root) / experiment_name(self.data.name, **run_settings)
        self.experiment = Experiment(folder, self.record)
        self._silhouette = None

    @property
    def folder(self) -> Path:
        return self.experiment.folder

    def check(self, ks: list[int]) -> None:
        """Before any fit: summary.SummaryError if the experiment folder cannot take these K."""
        self.experiment.check(ks)

    def run(self, ks: list[int]) -> list[KResult]:
        """Fit, score and save every K in order, then draw the K-choice chart, the sweep-level
        pictures and report.html once; returns (and keeps in .saved) what was saved."""
        for k in ks:
            self.run_one(k)
        self.finish()
        return self.saved

    def finish(self) -> list[dict]:
        """Draw the K-choice chart, the sweep-level pictures and report.html once, from every K
        in the folder (signals held: they are redrawn whole); returns the summary rows."""
        from ..render.report import finish_experiment

        with signals_held():
            checkpoint("drawing")
            self.rows = self.experiment.redraw()
            try:
                finish_experiment(self.folder)
            except OSError as error:
                raise ReportFailed(self.folder, [result.k for result in self.saved], error) from None
            self.drawn = True
        return self.rows

    @property
    def points(self):
        """What K-means clusters: the feature space's values, or the pixels."""
        return self.features.values if self.features is not None else self.data.all_pixel

    def run_one(self, k: int) -> KResult:
        from ..results.history import FitHistory
        from ..results.metrics import SilhouetteSample, dispersion_scores, evaluate, stability
        from ..results.run import write_run

        data, settings, points = self.data, self.settings, self.points
        fits, labelings = [], []
        for repeat in range(settings.repeats):
            seed = settings.seed + repeat
            history = FitHistory(
                data.image_shape, _to_pixels(self.features, data)
            )  # history.csv, evolution.gif
            progress = self.progress(k, repeat) if self.progress else contextlib.nullcontext()
            with progress as callback:
                started = time.perf_counter()
                model = _fit(
                    points,
                    k,
                    settings,
                    seed,
                    _together(history, callback),
                    init_progress=getattr(callback, "initialisation", None),
                )
                seconds = time.perf_counter() - started
            run = {
                "seed": seed,
                "inertia": float(model.inertia_),
                "n_iter": int(model.n_iter_),
                "converged": bool(model.converged_),
                "fit_seconds": round(seconds, 4),
                **dispersion_scores(points, model.labels_),
            }
            table = classes = None
            if data.labels is not None:
                label_scores, table, classes = evaluate(data.labels, model.labels_, k)
                run.update(label_scores)
            fits.append((run, model, table, classes, history))
            labelings.append(np.asarray(model.labels_))
        checkpoint("fitted", k)
        if self._silhouette is None:
            self._silhouette = SilhouetteSample(points)
        for (run, *_), value in zip(fits, self._silhouette.scores(labelings), strict=True):
            run["silhouette"] = value
        best_run, model, table, classes, history = min(fits, key=lambda fit: fit[0]["inertia"])
        runs = [fit[0] for fit in fits]
        extra = {
            "run_id": self.run_id,
            "experiment": self.experiment.name,
            **{
                name: self.record[name]
                for name in ("split", "limit", "keep_blank", "repeats", "features", "data_digest")
            },
            "seed": settings.seed,
            "best_seed": best_run["seed"],
            "fit_seconds": round(sum(run["fit_seconds"] for run in runs), 4),
            "scores": _mean_std(runs),
            "silhouette_sample": self._silhouette.size,
            "stability": stability(labelings),
            "runs": runs,
        }
        params = {
            "init": settings.init,
            "n_init": settings.n_init,
            "seed": best_run["seed"],
            "max_iter": settings.max_iter,
            "tol": settings.tol,
        }
        target = self.folder / f"k{k}"
        swapped: list[bool] = []
        try:
            folder = write_run(
                Path(self.root),
                data,
                model,
                params=params,
                seconds={"load": self.load_seconds, **self._feature_seconds(), "fit": extra["fit_seconds"]},
                metrics={name: best_run[name] for name in ("purity", "accuracy", "nmi", "ari")}
                if table is not None
                else None,
                table=table,
                classes=classes,
                samples=settings.samples,
                export_members=settings.export_members,
                extra=extra,
                install=lambda staging, target: self._install(k, staging, target, swapped),
                target=target,
                history=history,
                progress=getattr(callback, "writing", None),
                features=self.features,
            )
        except _UpdateFailed as failure:
            summary = self.folder / "summary.csv"
            raise SummaryFailed(k, target, summary, failure.error, bool(swapped)) from None
        except OSError as error:
            raise WriteFailed(k, target, error) from None
        result = self.saved[-1]
        assert result.k == k and result.folder == folder
        if self.on_saved is not None:
            self.on_saved(result)
        return result

    def _feature_seconds(self) -> dict:
        features = self.features
        return {} if features is None or features.space.method == "pixels" else {"features": features.seconds}

    def _install(self, k: int, staging: Path, target: Path, swapped: list[bool]) -> None:
        """Swap the complete staging folder in and rebuild the summary, locked, signals held."""
        from ..results.experiment import SummaryError
        from ..results.run import _swap_into_place

        checkpoint("staged", k)
        record = json.loads((staging / "summary.json").read_text(encoding="utf-8"))

        @contextlib.contextmanager
        def guard() -> Iterator[None]:
            with signals_held():
                checkpoint("locked", k)
                yield

        def swap() -> None:
            _swap_into_place(staging, target, between=lambda: checkpoint("aside", k))
            swapped.append(True)
            checkpoint("swapped", k)

        def done(rows: list[dict]) -> None:
            [row] = [row for row in rows if row["k"] == str(k)]
            result = KResult(k, row, target, bool(record["converged"]), int(record["empty_cluster_reseeds"]))
            self.saved.append(result)
            checkpoint("saved", k)

        try:
            self.experiment.update(k, record, swap, guard=guard, done=done)
        except (SummaryError, OSError) as error:
            if isinstance(error, OSError) and not swapped and _is_swap_error(error, target):
                raise
            raise _UpdateFailed(error) from None


class _UpdateFailed(Exception):
    def __init__(self, error: Exception):
        self.error = error


def _is_swap_error(error: OSError, target: Path) -> bool:
    return str(target) in {str(error.filename), str(error.filename2)}


def _mean_std(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Every score's mean and std (numpy's, ddof=0) over the repeats that define it."""
    from ..results.experiment import SCORES

    scores = {}
    for name in SCORES:
        values = [run[name] for run in runs if run.get(name) is not None]
        if values:
            scores[name] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
    return scores


class ReportFailed(Exception):
    """Every K is saved, but the experiment's pictures or report.html could not be written."""

    def __init__(self, folder: Path, ks: list[int], error: OSError):
        super().__init__(f"could not write the pictures and report.html in {folder}: {error}")
        self.folder, self.ks, self.error = folder, ks, error


def _to_pixels(features, data):
    """How the GIF shows a feature space's centres as images (None: they are images already)."""
    if features is None or features.space.method == "pixels":
        return None
    return lambda centers: features.centers_as_pixels(centers, data.all_pixel)


def _together(*callbacks):
    """One callback that calls each of the given ones (None are skipped)."""
    present = [callback for callback in callbacks if callback is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def together(info) -> None:
        for callback in present:
            callback(info)

    return together


def _fit(pixels, k: int, settings: Settings, seed: int, callback, init_progress=None):
    """One K-means fit with the sweep's settings (the engine never touches files)."""
    if settings.scheduler:
        from ..engine.dask.fit import fit  # on the current dask.distributed client, the same answers
    else:
        from ..engine.lloyd import fit

    return fit(
        pixels,
        k,
        init=settings.init,
        n_init=settings.n_init,
        max_iter=settings.max_iter,
        tol=settings.tol,
        random_state=seed,
        callback=callback,
        progress=init_progress,
    )


TEST_HOOK = "KMEANS_MNIST_TEST_HOOK"


def checkpoint(point: str, k: int | None = None) -> None:
    """A named point of the sweep where the tests of the interrupt windows act, deterministically.

    $KMEANS_MNIST_TEST_HOOK lists "POINT=SIGNAL" or "POINT@K=SIGNAL" items separated by ";"
    (e.g. "swapped@5=SIGKILL"): at that point the process sends itself that signal (SIGINT,
    SIGTERM, SIGKILL, or SIGSTOP to wait there until a SIGCONT). Points, in order: fitted,
    staged (folder written, lock not yet taken), locked (lock held, signals held), aside (old
    folder moved aside), swapped (new folder in place, tables not yet replaced), saved (tables
    replaced, still in the window), drawing (the chart, once per sweep). Unset: nothing happens.
    """
    spec = os.environ.get(TEST_HOOK)
    if not spec:
        return
    for item in spec.split(";"):
        where, _, action = item.strip().partition("=")
        name, _, only_k = where.partition("@")
        if name == point and (not only_k or (k is not None and only_k == str(k))):
            os.kill(os.getpid(), getattr(signal, action.strip()))


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held(deliver: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block is done, then deliver the first one received
    to the handler that was in place (deliver=False drops them: a caller already on its way out).

    The Python-level handlers are swapped rather than the signal mask, because the engine's
    worker threads would still receive a masked signal.
    """
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda n, frame: received.append(n)) for number in HELD_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received and deliver:
        signal.raise_signal(received[0])


interrupt_deferred = signals_held  # the name of version 0.1
