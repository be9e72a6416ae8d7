"""One sweep over K on data loaded once, into one experiment folder (results/experiment.py).

For each K: fit `repeats` times (seeds seed, seed+1, ...), score every fit (inertia, silhouette,
Calinski-Harabasz, Davies-Bouldin; purity, accuracy, NMI, ARI when labels are known), write the
lowest-inertia fit's files with the mean ± std of every score and the stability (mean pairwise
ARI between the repeats) into a staging folder (write_k_files: the data files of results/run.py,
the pictures of render/kfolder.py), then experiment.commit puts it in place. After the last K,
the K-choice chart, the sweep's pictures and report.html are drawn once (render/report.py).

Knows nothing of arguments or exit codes: failures are raised (WriteFailed, SummaryFailed,
experiment.SummaryError) and the caller words them. `Sweep.saved` lists, at every moment, the K
whose folder and summary row are both in place, so an interrupted caller can say which.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..atomic import checkpoint, signals_held


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
    cluster: dict | None = field(default=None, compare=False)  # that cluster (describe_cluster)
    samples: int = 64
    export_members: bool | str = False  # True, "png", "link" or "copy" (see render/kfolder.py)
    features: str = "pixels"  # the feature space's text (--features), part of the experiment


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


def experiment_settings(settings: Settings, selection: Selection) -> dict:
    """What makes an experiment, of these settings (results/experiment.py DEFAULTS: not the seed)."""
    return {
        "split": selection.split,
        "limit": selection.limit,
        "keep_blank": selection.keep_blank,
        "init": settings.init,
        "n_init": settings.n_init,
        "max_iter": settings.max_iter,
        "tol": settings.tol,
        "repeats": settings.repeats,
        "features": settings.features,
    }


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
        from ..results.csvfile import text_safe
        from ..results.experiment import Experiment, experiment_name

        run_settings = experiment_settings(self.settings, self.selection)
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
        from ..render.report import draw_choosing_k, draw_report

        with signals_held():
            checkpoint("drawing")
            with self.experiment.locked():
                runs = self.experiment.runs()  # every K in the folder, read once for all the drawing
                self.rows = draw_choosing_k(
                    self.experiment, runs
                )  # its OSError: the chart could not be drawn
                try:
                    draw_report(self.experiment, runs)
                except OSError as error:
                    raise ReportFailed(self.folder, [result.k for result in self.saved], error) from None
            self.drawn = True
        return self.rows

    @property
    def points(self):
        """What K-means clusters: the feature space's values, or the pixels."""
        return self.features.values if self.features is not None else self.data.all_pixel

    def run_one(self, k: int) -> KResult:
        from ..results.experiment import SUMMARY_FILE, CommitFailed
        from ..results.history import FitHistory
        from ..results.metrics import SilhouetteSample, dispersion_scores, evaluate, stability

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
            **({"dask_cluster": settings.cluster} if settings.cluster else {}),
        }
        params = {
            "init": settings.init,
            "n_init": settings.n_init,
            "seed": best_run["seed"],
            "max_iter": settings.max_iter,
            "tol": settings.tol,
        }
        target = self.experiment.k_folder(k)
        result: list[KResult] = []

        def saved(rows: list[dict]) -> None:  # inside the commit's held window: the K is saved
            [row] = [row for row in rows if row["k"] == str(k)]
            result.append(
                KResult(k, row, target, bool(record["converged"]), int(record["empty_cluster_reseeds"]))
            )
            self.saved.append(result[0])

        try:
            with self.experiment.staging(k) as staging:
                record = write_k_files(
                    staging,
                    data,
                    model,
                    params=params,
                    seconds={
                        "load": self.load_seconds,
                        **self._feature_seconds(),
                        "fit": extra["fit_seconds"],
                    },
                    metrics={name: best_run[name] for name in ("purity", "accuracy", "nmi", "ari")}
                    if table is not None
                    else None,
                    table=table,
                    classes=classes,
                    samples=settings.samples,
                    export_members=settings.export_members,
                    extra=extra,
                    history=history,
                    progress=getattr(callback, "writing", None),
                    features=self.features,
                )
                self.experiment.commit(k, staging, saved=saved)
        except CommitFailed as failure:
            if failure.in_swap:
                raise WriteFailed(k, target, failure.error) from None
            summary = self.folder / SUMMARY_FILE
            raise SummaryFailed(k, target, summary, failure.error, failure.swapped) from None
        except OSError as error:
            raise WriteFailed(k, target, error) from None
        if self.on_saved is not None:
            self.on_saved(result[0])
        return result[0]

    def _feature_seconds(self) -> dict:
        features = self.features
        return {} if features is None or features.space.method == "pixels" else {"features": features.seconds}


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


# --- one K's folder: the data files, then the pictures ---------------------------------------


def write_k_files(
    folder: Path,
    dataset,
    model,
    *,
    params: dict,
    seconds: dict,
    metrics: dict | None = None,
    table: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    samples: int = 64,
    export_members: bool | str = False,
    extra: dict | None = None,
    history=None,
    progress=None,
    features=None,
) -> dict:
    """Write every file of one fitted K into the empty folder; returns its summary.json record.

    When labels are known and metrics (or the table) are not given, they are computed here.
    history: the `FitHistory` that watched the fit (history.csv, evolution.gif). progress(done,
    total) is told the number of files written so far. extra: more entries for summary.json.
    """
    from ..engine.lloyd import distances_to_own
    from ..render.kfolder import draw_k_pictures, picture_count
    from ..results import run
    from ..results.model import save_model

    started = time.perf_counter()
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    clusters = np.asarray(model.labels_, dtype=np.int64)
    k = len(centers)
    if len(clusters) != len(dataset.images):
        raise ValueError(f"the model has {len(clusters)} labels for {len(dataset.images)} images")
    if dataset.labels is None:
        metrics = table = classes = None
    elif metrics is None or table is None or classes is None:
        from ..results.metrics import evaluate

        metrics, table, classes = evaluate(dataset.labels, model.labels_, k)
    matching = run.cluster_classes(dataset, table, classes) if table is not None else None
    in_features = features is not None and features.space.method != "pixels"
    distances = distances_to_own(features.values if in_features else dataset.all_pixel, centers, clusters)
    pixel_means = None
    if in_features:  # a centre in feature space is no image: the mean image of its members is
        from ..features import cluster_means

        pixel_means = cluster_means(dataset.all_pixel, clusters, k)
    total = picture_count(
        k, len(dataset.images), samples, export_members, table is not None, history, features
    )
    total += 2 + (history is not None)  # assignments.csv, model.npz, history.csv
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    members = run.members_nearest_first(clusters, distances, k)  # each cluster's, nearest first
    typical = draw_k_pictures(
        folder,
        dataset,
        centers,
        clusters,
        members,
        matching=matching,
        metrics=metrics,
        table=table,
        samples=samples,
        export_members=export_members,
        history=history,
        step=step,
        features=features,
        pixel_means=pixel_means,
    )
    paths = run.image_paths(dataset)
    run.write_assignments(folder / "assignments.csv", dataset.labels, clusters, distances, matching, paths)
    step()
    save_model(
        folder / "model.npz",
        model,
        dataset=dataset.name,
        image_shape=tuple(dataset.image_shape),
        channels=run.channels(dataset),
        resize=getattr(dataset, "resize", None),
        init=run.init_name(params.get("init")),
        seed=params.get("seed"),
        **(run.feature_arrays(features, pixel_means) if in_features else {}),
    )
    step()
    if history is not None:
        history.write_csv(folder / "history.csv")
        step()
    seconds = {**seconds, "write": time.perf_counter() - started}
    record = {**run.run_record(dataset, model, params, seconds, metrics, table, matching), **(extra or {})}
    record.update(run.feature_summary(features, typical))
    nearest = run.nearest_files(dataset, members)
    if nearest is not None:  # report.html's tooltips on the cluster grids
        record["nearest_files"] = nearest
    run.write_record(folder, record)
    return record


def write_run(root: Path, dataset, model, **options) -> Path:
    """One K's folder, root/<dataset>/k<K>, written whole outside any sweep (the Python API's way
    to keep a fit's files): staged beside it and swapped in, so a failure leaves the old one."""
    from ..atomic import staging_folder, swap_folder
    from ..results.run import run_dir

    target = run_dir(root, dataset.name, len(model.cluster_centers_))
    with staging_folder(target) as staging:
        write_k_files(staging, dataset, model, **options)
        swap_folder(staging, target)
    return target
