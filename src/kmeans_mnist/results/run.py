"""What a run leaves behind for one K: images, tables and the model, in root/<dataset>/k<K>/.

The folder is replaced as a whole by each run (see write_run); the summary across K lives in
summary.py, the drawing in pictures.py. Clusters are numbered 1..K in every file, as the
original project did; the Python API keeps 0..K-1.
"""

import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..atomic import hold, sibling_path
from ..render.pictures import (
    center_images,
    centroid_sheet,
    cluster_grid,
    draw_confusion,
    percent,
    run_title,
    save_png,
)

if TYPE_CHECKING:
    from ..engine.estimator import KMeans

MODEL_FORMAT_VERSION = 1
ASSIGNMENT_BLOCK_ROWS = 65_536  # rows of assignments.csv formatted at a time
NEAREST_FILES = 8  # file names per cluster in summary.json (report.html's tooltips)


def run_dir(root: Path, dataset_name: str, k: int) -> Path:
    """The folder holding one K's results."""
    return Path(root) / dataset_name / f"k{k}"


def cluster_number_width(k: int) -> int:
    """Digits used for cluster numbers in file names (01..K)."""
    return max(2, len(str(k)))


# --- one run ---------------------------------------------------------------------------------


def write_run(
    root: Path,
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
    install=None,
    target: Path | None = None,
    history=None,
    progress=None,
) -> Path:
    """Write every file for one fitted K and return its folder.

    Files go to a temporary folder beside the target and are swapped in only when complete,
    so a failure or Ctrl-C leaves the previous results of that K untouched. When labels are
    known and metrics (or the table) are not given, they are computed here. history: the
    `FitHistory` that watched the fit, for history.csv and evolution.gif. progress(done, total)
    is told the number of pictures written so far. extra: more entries for summary.json.
    install(staging, target): what swaps the complete folder into place (default:
    _swap_into_place); the sweep's takes its lock and updates the summary too. target: the
    folder to write (default root/<dataset>/k<K>; the sweep's experiment folder).
    """
    started = time.perf_counter()
    k = len(model.cluster_centers_)
    target = run_dir(root, dataset.name, k) if target is None else Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_path(target, "tmp")
    claim = None
    try:
        staging.mkdir()  # inside the try: a Ctrl-C just after it must not leave the folder behind
        claim = hold(staging)  # while held, no other run takes the folder for a killed run's leftover
        if dataset.labels is None:
            metrics = table = classes = None
        elif metrics is None or table is None or classes is None:
            from .metrics import evaluate

            metrics, table, classes = evaluate(dataset.labels, model.labels_, k)
        matching = cluster_classes(dataset, table, classes) if table is not None else None
        nearest_files = _write_files(
            staging,
            dataset,
            model,
            params,
            metrics,
            table,
            matching,
            samples,
            export_members,
            history,
            progress,
        )
        seconds = {**seconds, "write": time.perf_counter() - started}
        summary = {**_run_summary(dataset, model, params, seconds, metrics, table, matching), **(extra or {})}
        if nearest_files is not None:  # report.html's tooltips on the cluster grids
            summary["nearest_files"] = nearest_files
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (install or _swap_into_place)(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if claim is not None:
            os.close(claim)
    return target


class ClusterClasses(NamedTuple):
    """Which class each cluster stands for (metrics.matched_classes), in the words people read."""

    column: np.ndarray  # K: the matched class's column in the contingency table
    value: np.ndarray  # K: its label value
    name: list[str]  # K: its name ("Trouser"; the digit for MNIST and USPS)
    share: np.ndarray  # K: share of the cluster's members in that class (0 for an empty cluster)
    method: str  # "hungarian" (K <= classes, one-to-one) or "majority"
    class_names: list[str]  # the table's columns, named

    def caption(self, cluster: int) -> str:
        """'Trouser · 92 %'."""
        return f"{self.name[cluster]} · {percent(self.share[cluster])}"


def cluster_classes(dataset, table: np.ndarray, classes: np.ndarray) -> ClusterClasses:
    from .metrics import matched_classes

    column, share, method = matched_classes(table)
    class_names = _class_names(dataset, classes)
    return ClusterClasses(
        column, np.asarray(classes)[column], [class_names[c] for c in column], share, method, class_names
    )


def _write_files(
    folder, dataset, model, params, metrics, table, matching, samples, export_members, history, progress
) -> list[list[str]] | None:
    """Every file of the k folder but summary.json; returns, for images from files, each
    cluster's NEAREST_FILES nearest members' paths (None otherwise)."""
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    clusters = np.asarray(model.labels_, dtype=np.int64)
    k = len(centers)
    width = cluster_number_width(k)
    images = np.asarray(dataset.images)
    if len(clusters) != len(images):
        raise ValueError(f"the model has {len(clusters)} labels for {len(images)} images")
    distances = distances_to_centers(dataset.all_pixel, centers, clusters)
    sizes = np.bincount(clusters, minlength=k)
    representatives = center_images(centers, dataset.image_shape)
    title = run_title(dataset.name, k, len(images), metrics)
    total = (
        k  # centroids/
        + 3  # centroids.png, assignments.csv, model.npz
        + (k if samples > 0 else 0)
        + (len(images) if export_members else 0)
        + (1 if table is not None else 0)
        + (2 if history is not None else 0)
    )
    done = 0

    def step(count: int = 1) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    (folder / "centroids").mkdir()
    for number, image in enumerate(representatives, start=1):
        save_png(image, folder / "centroids" / f"centroid_{number:0{width}d}.png")
        step()
    note = None
    if matching is not None:
        note = (
            "captions: cluster, its matched class (one-to-one, Hungarian) and that class's share of the cluster"
            if matching.method == "hungarian"
            else "captions: cluster, its majority class (K > classes: no one-to-one match) and its share"
        )
    captions = [matching.caption(i) for i in range(k)] if matching is not None else None
    save_png(
        centroid_sheet(representatives, sizes, title=title, classes=captions, note=note),
        folder / "centroids.png",
    )
    step()

    members_by_cluster = _members_nearest_first(clusters, distances, k)
    export = _member_exporter(dataset, images, export_members) if export_members else None
    if samples > 0 or export_members:
        (folder / "clusters").mkdir()
    for number, members in enumerate(members_by_cluster, start=1):
        if samples > 0:
            grid = _cluster_grid(dataset, title, number, members, samples, matching)
            save_png(grid, folder / "clusters" / f"cluster_{number:0{width}d}.png")
            step()
        if export:
            export(members, folder / "clusters" / f"{number:0{width}d}", step)

    _write_assignments(
        folder / "assignments.csv", dataset.labels, clusters, distances, matching, _paths(dataset)
    )
    step()
    save_model(
        folder / "model.npz",
        model,
        dataset=dataset.name,
        image_shape=tuple(dataset.image_shape),
        channels=_channels(dataset),
        resize=getattr(dataset, "resize", None),
        init=_init_name(params.get("init")),
        seed=params.get("seed"),
    )
    step()
    if table is not None:
        draw_confusion(
            folder / "confusion.png", table, matching.class_names, matching.column, matching.method, title
        )
        step()
    if history is not None:
        history.write_csv(folder / "history.csv")
        step()
        history.write_gif(folder / "evolution.gif", centers, _evolution_title(dataset, k), k)
        step()
    paths = _paths(dataset)
    if paths is None:
        return None
    return [[text_safe(str(paths[i])) for i in members[:NEAREST_FILES]] for members in members_by_cluster]


def grid_members(
    members: np.ndarray, samples: int, labels: np.ndarray | None = None, matched: int | None = None
) -> dict[str, np.ndarray]:
    """Which members a cluster grid shows, at most `samples` in all, none twice.

    members: the cluster's indices, nearest to the representative first. "nearest": the first
    half; "farthest": the last members (farthest last); with labels, "other": members of other
    classes than the matched one, spread evenly over the distance order, so a mixed cluster
    shows its mix. Small clusters are shown whole, in the nearest section.
    """
    labelled = labels is not None and matched is not None
    if len(members) <= samples:
        other = members[labels[members] != matched] if labelled else members[:0]
        return {"nearest": members, "farthest": members[:0], "other": other[:0]}
    n_nearest = math.ceil(samples / 2)
    n_farthest = (samples - n_nearest) // 2 if labelled else samples - n_nearest
    nearest = members[:n_nearest]
    farthest = members[len(members) - n_farthest :] if n_farthest else members[:0]
    other = members[:0]
    if labelled:
        middle = members[n_nearest : len(members) - n_farthest]
        strangers = middle[labels[middle] != matched]
        n_other = samples - n_nearest - n_farthest
        if len(strangers) > n_other:
            strangers = strangers[np.linspace(0, len(strangers) - 1, n_other).round().astype(np.int64)]
        other = strangers
    return {"nearest": nearest, "farthest": farthest, "other": other}


def _paths(dataset) -> np.ndarray | None:
    """The images' file names (Dataset.paths), or None for a named dataset or a single file."""
    return getattr(dataset, "paths", None)


def _channels(dataset) -> int:
    return int(getattr(dataset, "channels", 1))


def _file_captions(dataset, indices: np.ndarray, classes: list[str] | None = None) -> list[list[str]] | None:
    """Caption lines of grid tiles: the file's name (not its folders: the class folder is in the
    heading or the class line), under the class when given; None without file names."""
    paths = _paths(dataset)
    if paths is None:
        return None if classes is None else [[name] for name in classes]
    names = [_printable(text_safe(str(paths[index])).rsplit("/", 1)[-1]) for index in indices]
    return [[names[i]] if classes is None else [classes[i], names[i]] for i in range(len(names))]


def _printable(text: str) -> str:
    """A line break or other control character in a file name, written as \\n...: one caption line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _cluster_grid(dataset, title, number, members, samples, matching) -> np.ndarray:
    labels = dataset.labels if matching is not None else None
    index = number - 1
    matched = int(matching.value[index]) if matching is not None else None
    shown = grid_members(members, samples, labels, matched)
    images = dataset.images
    names = dataset.class_names or {}
    size = len(members)
    heading = [title, f"cluster #{number} · {size:,} images"]
    if matching is not None:
        how = "matched class" if matching.method == "hungarian" else "majority class"
        heading[1] += f" · {how}: {matching.name[index]} ({percent(matching.share[index])} of the cluster)"
    sections = []
    if not size:
        sections.append(("an empty cluster: no members", images[:0], None))
    elif not len(shown["farthest"]) and len(shown["nearest"]) == size:
        sections.append(
            (
                f"all {size:,} members, nearest to the representative first",
                images[members],
                _file_captions(dataset, members),
            )
        )
    else:
        nearest, farthest = shown["nearest"], shown["farthest"]
        sections.append(
            (
                f"the {len(nearest)} nearest to the representative",
                images[nearest],
                _file_captions(dataset, nearest),
            )
        )
        if len(farthest):
            sections.append(
                (
                    f"the {len(farthest)} farthest (farthest last)",
                    images[farthest],
                    _file_captions(dataset, farthest),
                )
            )
    if matching is not None and size:
        strangers = int(np.count_nonzero(labels[members] != matched))
        other = shown["other"]
        if not strangers:
            sections.append((f"every member is {matching.name[index]}", images[:0], None))
        elif len(other):
            captions = [names.get(int(label), str(label)) for label in labels[other]]
            sections.append(
                (
                    f"{len(other)} of the {strangers:,} members of other classes than "
                    f"{matching.name[index]}, from nearest to farthest",
                    images[other],
                    _file_captions(dataset, other, captions),
                )
            )
    return cluster_grid(heading, sections)


def _run_summary(dataset, model, params, seconds, metrics, table, matching) -> dict:
    summary = {
        "dataset": dataset.name,
        "source": text_safe(dataset.source),
        "n_samples": len(dataset.images),
        "image_shape": [int(n) for n in dataset.image_shape],
        "channels": _channels(dataset),
        "k": len(model.cluster_centers_),
        "init": _init_name(params.get("init")),
        "n_init": params.get("n_init"),
        "seed": params.get("seed"),
        "max_iter": params.get("max_iter"),
        "tol": params.get("tol"),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "inertia": float(model.inertia_),
        "cluster_sizes": np.bincount(model.labels_, minlength=len(model.cluster_centers_)).tolist(),
        "empty_cluster_reseeds": int(getattr(model, "n_empty_reseeds_", 0)),
        "n_blank_skipped": int(dataset.n_blank_skipped),
        "seconds": {name: round(float(value), 4) for name, value in seconds.items()},
    }
    if metrics is not None:
        summary["metrics"] = {name: float(value) for name, value in metrics.items()}
        summary["confusion"] = {"classes": matching.class_names, "counts": np.asarray(table).tolist()}
        summary["cluster_classes"] = {
            "method": matching.method,
            "clusters": [
                {
                    "cluster": number,
                    "class": int(matching.value[number - 1]),
                    "name": matching.name[number - 1],
                    "share": round(float(matching.share[number - 1]), 4),
                }
                for number in range(1, len(matching.name) + 1)
            ],
        }
    return summary


def _evolution_title(dataset, k: int) -> str:
    return f"{dataset.name} · K={k} · the representatives, iteration by iteration"


def _init_name(init) -> str | None:
    """The init method as text (an array of starting centres is recorded as "array")."""
    return init if init is None or isinstance(init, str) else "array"


def _class_names(dataset, classes: np.ndarray) -> list[str]:
    names = dataset.class_names or {}
    return [names.get(int(value), str(value)) for value in classes]


def _swap_into_place(staging: Path, target: Path, between=None) -> None:
    """Replace target by staging: move the old folder aside, rename, then delete the old one.
    between(): called between the two renames (the sweep's test hook)."""
    aside = sibling_path(target, "old")
    try:
        if target.exists():
            os.rename(target, aside)
        if between is not None:
            between()
        os.rename(staging, target)
    except BaseException:
        if aside.exists() and not target.exists():
            os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def text_safe(text):
    """text with the undecodable bytes of a path (lone surrogates under a POSIX locale) written
    as \\xNN, so that every file we write stays valid UTF-8."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else text


# --- numbers ---------------------------------------------------------------------------------


def distances_to_centers(
    pixels: np.ndarray, centers: np.ndarray, clusters: np.ndarray, chunk: int = 8192
) -> np.ndarray:
    """Euclidean distance of each image to its own cluster's centre (float32 differences, in chunks:
    about 1e-6 relative, ample for the six digits written)."""
    centers32 = centers.astype(np.float32)
    distances = np.empty(len(pixels), dtype=np.float64)
    for start in range(0, len(pixels), chunk):
        rows = slice(start, start + chunk)
        differences = pixels[rows].astype(np.float32) - centers32[clusters[rows]]
        distances[rows] = np.sqrt(np.einsum("ij,ij->i", differences, differences, dtype=np.float64))
    return distances


def _members_nearest_first(clusters: np.ndarray, distances: np.ndarray, k: int) -> list[np.ndarray]:
    """For each cluster, the indices of its members sorted by distance to the centre."""
    order = np.lexsort((distances, clusters))
    boundaries = np.cumsum(np.bincount(clusters, minlength=k))[:-1]
    return np.split(order, boundaries)


EXPORT_MODES = ("png", "link", "copy")


def _member_exporter(dataset, images: np.ndarray, mode):
    """export(members, folder, step) for --export-members MODE (True: link for files, else png).

    link/copy put each member's original file under its own name (symbolic links to the
    absolute original path, or copies where links cannot be made); a dataset without files (a
    named one, an .npy...) writes PNGs by index, as png does.
    """
    paths, root = _paths(dataset), getattr(dataset, "paths_root", None)
    mode = "link" if mode is True else mode
    if mode not in EXPORT_MODES:
        raise ValueError(f"export_members must be one of {', '.join(EXPORT_MODES)} (or True), got {mode!r}")
    if mode == "png" or paths is None or root is None:
        return lambda members, folder, step: _export_members(images, members, folder, step)
    can_link = [mode == "link"]

    def export(members: np.ndarray, folder: Path, step=None) -> None:
        folder.mkdir()
        taken: set[str] = set()
        for index in members:
            relative = str(paths[index])
            name = _free_name(relative.rsplit("/", 1)[-1], taken)
            source, target = Path(root) / relative, folder / name
            if can_link[0]:
                try:
                    os.symlink(source, target)
                except OSError:  # no links on this file system (or not for this user): copies
                    can_link[0] = False
            if not can_link[0]:
                shutil.copy2(source, target, follow_symlinks=True)
            if step is not None:
                step()

    return export


def _free_name(name: str, taken: set[str]) -> str:
    """name, or name~2, name~3... (before the extension) when a member of the cluster already has
    it; compared ignoring case, for file systems that do."""
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}~{number}{dot}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _export_members(images: np.ndarray, members: np.ndarray, folder: Path, step=None) -> None:
    """Every member as its own PNG, named by its index in the loaded data; step() after each."""
    folder.mkdir()
    width = max(6, len(str(len(images) - 1)))
    for index in members:
        save_png(images[index], folder / f"{index:0{width}d}.png")
        if step is not None:
            step()


def _write_assignments(
    path: Path, labels, clusters: np.ndarray, distances: np.ndarray, matching=None, paths=None
) -> None:
    """assignments.csv, one row per image: index,label,cluster,distance,matched_class,matched_name,
    and index,path,label,... for images read from files (path: the file, relative to --data-dir,
    quoted as CSV needs; no path column for named datasets and single files).

    label is blank when unknown, and so are the two matched columns: the class the image's cluster
    stands for (see cluster_classes) and its name, quoted as CSV needs.
    """
    per_cluster = (
        [","] * (int(clusters.max(initial=-1)) + 1)
        if matching is None
        else [
            f"{value},{_csv_field(name)}"
            for value, name in zip(matching.value.tolist(), matching.name, strict=True)
        ]
    )
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        file.write(
            f"index,{'path,' if paths is not None else ''}label,cluster,distance,matched_class,matched_name\n"
        )
        # A block of rows at a time: 8.1 million rows never become one list of strings in memory.
        for start in range(0, len(clusters), ASSIGNMENT_BLOCK_ROWS):
            rows = slice(start, start + ASSIGNMENT_BLOCK_ROWS)
            block = clusters[rows].tolist()
            label_texts = [""] * len(block) if labels is None else labels[rows].tolist()
            values = zip(label_texts, block, distances[rows].tolist(), strict=True)
            path_texts = (
                [""] * len(block)
                if paths is None
                else [_csv_field(text_safe(str(name))) + "," for name in paths[rows]]
            )
            # One f-string per row: six times faster than np.savetxt, the same text.
            file.write(
                "".join(
                    f"{index},{path_text}{label},{cluster + 1},{distance:.6g},{per_cluster[cluster]}\n"
                    for index, path_text, (label, cluster, distance) in zip(
                        range(start, start + len(block)), path_texts, values, strict=True
                    )
                )
            )


def _csv_field(text: str) -> str:
    """text as one CSV field: quoted (quotes doubled) when it holds a comma, quote or line break."""
    if any(character in text for character in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


# --- the model -------------------------------------------------------------------------------


def save_model(path: Path, model, **metadata) -> None:
    """Centres and metadata in an .npz (no pickle); None values are left out."""
    arrays = {
        "cluster_centers": np.asarray(model.cluster_centers_, dtype=np.float64),
        "format_version": MODEL_FORMAT_VERSION,
        "k": len(model.cluster_centers_),
        "inertia": float(model.inertia_),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
    }
    clashes = arrays.keys() & metadata.keys()
    if clashes:
        raise ValueError(f"metadata may not replace {sorted(clashes)}")
    arrays.update({name: _storable(value) for name, value in metadata.items() if value is not None})
    with open(path, "wb") as file:  # a file object keeps np.savez from appending ".npz"
        np.savez(file, **arrays)


def _storable(value):
    """Python ints beyond int64 (a --seed >= 2**63) as uint64 or decimal text: never an object
    array, which np.savez would pickle."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return np.uint64(value) if 0 <= value < 2**64 else np.str_(str(value))
    return value


class ModelError(ValueError):
    """A file that load_model cannot read as a model saved by save_model (damaged, or another file)."""


def load_model(path: Path) -> "KMeans":
    """A fitted KMeans from save_model's file; its predict assigns new images.

    Raises ModelError (a ValueError) naming the file when it is not a readable model, OSError
    when it cannot be opened at all (missing, no permission).
    """
    from ..engine.estimator import KMeans

    try:
        with np.load(path, allow_pickle=False) as stored:
            version = int(stored["format_version"])
            if version != MODEL_FORMAT_VERSION:
                raise ModelError(f"{path}: model format {version}, this version reads {MODEL_FORMAT_VERSION}")
            centers = np.asarray(stored["cluster_centers"])
            if centers.ndim != 2 or 0 in centers.shape or centers.dtype.kind != "f":
                raise ModelError(f"{path}: cluster_centers is not a K x D array of numbers")
            if not np.all(np.isfinite(centers)):
                raise ModelError(f"{path}: cluster_centers holds NaN or infinity")
            model = KMeans(n_clusters=len(centers), init=centers)
            model.cluster_centers_ = centers
            model.inertia_ = float(stored["inertia"])
            model.n_iter_ = int(stored["n_iter"])
            model.converged_ = bool(stored["converged"])
            model.n_features_in_ = centers.shape[1]
            model._n_features_out = len(centers)
    except ModelError:
        raise
    except (
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        IndexError,
        OverflowError,
        zipfile.BadZipFile,
    ) as error:
        reason = str(error.args[0]) if error.args else type(error).__name__
        raise ModelError(f"{path} is not a model file saved by kmeans-mnist ({reason})") from None
    return model
