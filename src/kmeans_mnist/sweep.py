"""One sweep over K on data loaded once: for each K, fit, score, write k<K>/ and its summary row.

Knows nothing of arguments or exit codes: failures are raised as WriteFailed / SummaryFailed
(the cause attached) and the caller turns them into messages. `Sweep.saved` always lists the K
whose folder and summary row are both in place, so a caller interrupted mid-sweep can say which.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """How each K is fitted and what is written for it."""

    init: str = "k-means++"
    n_init: int = 1
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 0
    scheduler: str | None = None  # fit on the Dask cluster the command line connected to
    samples: int = 64
    export_members: bool = False


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
    """The k<K> folder is complete, but summary.csv could not be updated (OSError or SummaryError)."""

    def __init__(self, k: int, folder: Path, summary: Path, error: Exception):
        super().__init__(f"could not update {summary}: {error}")
        self.k, self.folder, self.summary, self.error = k, folder, summary, error


# progress(k) -> a context manager yielding the fit's per-iteration callback (or None)
ProgressFactory = Callable[[int], contextlib.AbstractContextManager]


@dataclass
class Sweep:
    """Cluster `data` for each K in turn into root/<dataset>/; see run()."""

    root: Path
    data: object
    settings: Settings
    load_seconds: float = 0.0
    progress: ProgressFactory | None = None
    saved: list[KResult] = field(default_factory=list)
    on_saved: Callable[[KResult], None] | None = None  # told as soon as each K is saved

    def run(self, ks: list[int]) -> list[KResult]:
        """Fit, score and save every K in order, then redraw the experiment's sweep-level pictures
        and report.html; returns (and keeps in .saved) what was saved."""
        for k in ks:
            self.run_one(k)
        self.finish()
        return self.saved

    def finish(self) -> None:
        """The experiment folder's sweep-level pictures and report.html, from every K in it."""
        from .report import finish_experiment

        if not self.saved:
            return
        folder = self.saved[-1].folder.parent
        try:
            finish_experiment(folder)
        except OSError as error:
            raise ReportFailed(folder, [result.k for result in self.saved], error) from None

    def run_one(self, k: int) -> KResult:
        from .history import FitHistory
        from .metrics import evaluate
        from .output import run_dir, write_run
        from .summary import SummaryError, update_summary

        data, settings = self.data, self.settings
        history = FitHistory(data.image_shape)  # for history.csv and evolution.gif
        progress = self.progress(k) if self.progress else contextlib.nullcontext()
        with progress as callback:
            started = time.perf_counter()
            model = _fit(
                data.all_pixel,
                k,
                settings,
                _together(history, callback),
                init_progress=getattr(callback, "initialisation", None),
            )
            fit_seconds = time.perf_counter() - started

        metrics = table = classes = None
        if data.labels is not None:
            metrics, table, classes = evaluate(data.labels, model.labels_, k)
        params = {
            "init": settings.init,
            "n_init": settings.n_init,
            "seed": settings.seed,
            "max_iter": settings.max_iter,
            "tol": settings.tol,
        }
        try:
            folder = write_run(
                Path(self.root),
                data,
                model,
                params=params,
                seconds={"load": self.load_seconds, "fit": fit_seconds},
                metrics=metrics,
                table=table,
                classes=classes,
                samples=settings.samples,
                export_members=settings.export_members,
                history=history,
                progress=getattr(callback, "writing", None),
            )
        except OSError as error:
            raise WriteFailed(k, run_dir(Path(self.root), data.name, k), error) from None
        scores = metrics or {}
        row = {
            "k": k,
            "inertia": f"{model.inertia_:.6e}",
            **{
                name: f"{scores[name]:.4f}" if name in scores else ""
                for name in ("purity", "accuracy", "nmi", "ari")
            },
            "n_iter": model.n_iter_,
            "fit_seconds": f"{fit_seconds:.3f}",
            "seed": settings.seed,
        }
        result = KResult(k, row, folder, bool(model.converged_), int(model.n_empty_reseeds_))
        try:
            with interrupt_deferred():  # the new k<K> folder is in place: its summary row must follow it
                update_summary(Path(self.root), data.name, row)
                self.saved.append(result)
        except (SummaryError, OSError) as error:
            raise SummaryFailed(k, folder, Path(self.root) / data.name / "summary.csv", error) from None
        if self.on_saved is not None:
            self.on_saved(result)
        return result


class ReportFailed(Exception):
    """Every K is saved, but the experiment's pictures or report.html could not be written."""

    def __init__(self, folder: Path, ks: list[int], error: OSError):
        super().__init__(f"could not write the pictures and report.html in {folder}: {error}")
        self.folder, self.ks, self.error = folder, ks, error


def _together(*callbacks):
    """One callback that calls each of the given ones (None are skipped)."""
    present = [callback for callback in callbacks if callback is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def together(info) -> None:
        for callback in present:
            callback(info)

    return together


def _fit(pixels, k: int, settings: Settings, callback, init_progress=None):
    """One K-means fit with the sweep's settings (the engine never touches files)."""
    if settings.scheduler:
        from .dask_engine import fit  # on the current dask.distributed client, the same answers
    else:
        from .engine import fit

    return fit(
        pixels,
        k,
        init=settings.init,
        n_init=settings.n_init,
        max_iter=settings.max_iter,
        tol=settings.tol,
        random_state=settings.seed,
        callback=callback,
        progress=init_progress,
    )


@contextlib.contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
