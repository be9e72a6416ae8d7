"""What a run leaves behind: images, tables and the model for one K, plus a summary across K.

Layout under root/<dataset>/:
    k<K>/            one folder per K, replaced as a whole by each run (see write_run)
    summary.csv      one row per K, shared by all runs (see update_summary)
    elbow.png        inertia (and accuracy) against K, redrawn from summary.csv

Clusters are numbered 1..K in every file, as the original project did; the Python API
keeps 0..K-1. Matplotlib is imported only inside the functions that draw, to keep the
CLI quick to start.
"""

import contextlib
import fcntl
import json
import math
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from .kmeans import KMeans

MODEL_FORMAT_VERSION = 1
SUMMARY_COLUMNS = ("k", "inertia", "purity", "accuracy", "nmi", "ari", "n_iter", "fit_seconds", "seed")
SHEET_TILE_PIXELS = 112  # centroids.png upscales each representative to about this size
SHEET_COLUMNS = 10
CAPTION_PIXELS = 16
GRID_GAP = 2
STALE_TEMP_SECONDS = 3600  # a temp folder untouched this long belongs to a killed run


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
    export_members: bool = False,
) -> Path:
    """Write every file for one fitted K and return its folder.

    Files go to a temporary folder beside the target and are swapped in only when complete,
    so a failure or Ctrl-C leaves the previous results of that K untouched. When labels are
    known and metrics (or the table) are not given, they are computed here.
    """
    started = time.perf_counter()
    k = len(model.cluster_centers_)
    target = run_dir(root, dataset.name, k)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "tmp")
    staging.mkdir()
    try:
        if dataset.labels is None:
            metrics = table = classes = None
        elif metrics is None or table is None or classes is None:
            from .metrics import evaluate

            metrics, table, classes = evaluate(dataset.labels, model.labels_, k)
        _write_files(staging, dataset, model, params, metrics, table, classes, samples, export_members)
        seconds = {**seconds, "write": time.perf_counter() - started}
        summary = _run_summary(dataset, model, params, seconds, metrics, table, classes)
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_files(folder, dataset, model, params, metrics, table, classes, samples, export_members) -> None:
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

    (folder / "centroids").mkdir()
    for number, image in enumerate(representatives, start=1):
        _save_png(image, folder / "centroids" / f"centroid_{number:0{width}d}.png")
    _save_png(centroid_sheet(representatives, sizes), folder / "centroids.png")

    members_by_cluster = _members_nearest_first(clusters, distances, k)
    (folder / "clusters").mkdir()
    for number, members in enumerate(members_by_cluster, start=1):
        if samples > 0:
            grid = image_grid(images[members[:samples]], columns=math.ceil(math.sqrt(samples)))
            _save_png(grid, folder / "clusters" / f"cluster_{number:0{width}d}.png")
        if export_members:
            _export_members(images, members, folder / "clusters" / f"{number:0{width}d}")

    _write_assignments(folder / "assignments.csv", dataset.labels, clusters, distances)
    if table is not None:
        _draw_confusion(folder / "confusion.png", table, _class_names(dataset, classes))
    save_model(
        folder / "model.npz",
        model,
        dataset=dataset.name,
        image_shape=tuple(dataset.image_shape),
        init=_init_name(params.get("init")),
        seed=params.get("seed"),
    )


def _run_summary(dataset, model, params, seconds, metrics, table, classes) -> dict:
    summary = {
        "dataset": dataset.name,
        "source": dataset.source,
        "n_samples": len(dataset.images),
        "image_shape": [int(n) for n in dataset.image_shape],
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
        summary["confusion"] = {
            "classes": _class_names(dataset, classes),
            "counts": np.asarray(table).tolist(),
        }
    return summary


def _init_name(init) -> str | None:
    """The init method as text (an array of starting centres is recorded as "array")."""
    return init if init is None or isinstance(init, str) else "array"


def _class_names(dataset, classes: np.ndarray) -> list[str]:
    names = dataset.class_names or {}
    return [names.get(int(value), str(value)) for value in classes]


def _swap_into_place(staging: Path, target: Path) -> None:
    """Replace target by staging: move the old folder aside, rename, then delete the old one."""
    aside = _sibling(target, "old")
    try:
        if target.exists():
            os.rename(target, aside)
        os.rename(staging, target)
    except BaseException:
        if aside.exists() and not target.exists():
            os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    _remove_leftovers(target)


def _sibling(path: Path, kind: str) -> Path:
    """A fresh hidden name beside path, e.g. .k7.tmp-<pid>-<random>.

    Made by hand rather than with tempfile so that the folders and files, once renamed into
    place, get the usual permissions (tempfile makes them private to the owner).
    """
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove_leftovers(target: Path) -> None:
    """Delete what killed runs of this K left: old folders, and temp folders long untouched.

    Best effort: the new results are already in place, so a failure here is ignored.
    """
    for leftover in target.parent.glob(f".{target.name}.old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)


# --- numbers and pictures ----------------------------------------------------------------------


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


def center_images(centers: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Centres as K x H x W uint8 images: rounded, clipped to 0..255."""
    pixels = np.clip(np.rint(np.asarray(centers, dtype=np.float64)), 0, 255).astype(np.uint8)
    return pixels.reshape(len(pixels), *image_shape)


def _members_nearest_first(clusters: np.ndarray, distances: np.ndarray, k: int) -> list[np.ndarray]:
    """For each cluster, the indices of its members sorted by distance to the centre."""
    order = np.lexsort((distances, clusters))
    boundaries = np.cumsum(np.bincount(clusters, minlength=k))[:-1]
    return np.split(order, boundaries)


def image_grid(tiles: np.ndarray, columns: int, gap: int = GRID_GAP, background: int = 255) -> np.ndarray:
    """Tiles (n x h x w uint8) laid out row by row with a gap around each; an empty grid for n=0."""
    count, height, width = tiles.shape
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    grid = np.full((gap + rows * (height + gap), gap + columns * (width + gap)), background, np.uint8)
    for position, tile in enumerate(tiles):
        top = gap + (position // columns) * (height + gap)
        left = gap + (position % columns) * (width + gap)
        grid[top : top + height, left : left + width] = tile
    return grid


def centroid_sheet(representatives: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """All representatives upscaled (nearest neighbour), each captioned "#<cluster>  n=<size>"."""
    _, height, width = representatives.shape
    scale = max(1, round(SHEET_TILE_PIXELS / max(height, width)))
    tiles = representatives.repeat(scale, axis=1).repeat(scale, axis=2)
    tiles = np.pad(tiles, ((0, 0), (0, CAPTION_PIXELS), (0, 0)), constant_values=255)
    gap = 4
    sheet = Image.fromarray(image_grid(tiles, SHEET_COLUMNS, gap=gap))
    draw = ImageDraw.Draw(sheet)
    columns = min(SHEET_COLUMNS, len(tiles))
    for position, size in enumerate(sizes):
        left = gap + (position % columns) * (width * scale + gap)
        top = gap + (position // columns) * (tiles.shape[1] + gap) + height * scale + 2
        draw.text((left + 2, top), f"#{position + 1}  n={size:,}", fill=0)
    return np.asarray(sheet)


def _save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path)  # 2-D uint8: mode "L"


def _export_members(images: np.ndarray, members: np.ndarray, folder: Path) -> None:
    """Every member as its own PNG, named by its index in the loaded data."""
    folder.mkdir()
    width = max(6, len(str(len(images) - 1)))
    for index in members:
        _save_png(images[index], folder / f"{index:0{width}d}.png")


def _write_assignments(path: Path, labels, clusters: np.ndarray, distances: np.ndarray) -> None:
    """assignments.csv: index,label,cluster,distance, one row per image (label blank if unknown)."""
    numbers = (clusters + 1).tolist()
    label_texts = [""] * len(numbers) if labels is None else labels.tolist()
    rows = zip(label_texts, numbers, distances.tolist(), strict=True)
    # One f-string per row: six times faster than np.savetxt, the same text.
    lines = [
        f"{index},{label},{number},{distance:.6g}\n" for index, (label, number, distance) in enumerate(rows)
    ]
    with open(path, "w", encoding="ascii", newline="\n") as file:
        file.write("index,label,cluster,distance\n")
        file.write("".join(lines))


def _draw_confusion(path: Path, table: np.ndarray, class_names: list[str]) -> None:
    """Heat map of cluster (rows, 1..K) by class (columns), counts in the cells while they fit."""
    from matplotlib.figure import Figure

    k, n_classes = table.shape
    figure = Figure(figsize=(max(5.0, 0.6 * n_classes + 2.5), max(3.5, 0.4 * k + 1.5)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(table, cmap="Blues", aspect="auto")
    figure.colorbar(image, ax=axes, label="images")
    axes.set_xticks(range(n_classes), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    axes.set_yticks(range(k), [str(number) for number in range(1, k + 1)])
    axes.set_xlabel("class")
    axes.set_ylabel("cluster")
    axes.set_title("images per cluster and class")
    font_size = 8 if k <= 20 else 6 if k <= 40 else 0
    if font_size:
        dark = table.max() / 2
        for (row, column), count in np.ndenumerate(table):
            color = "white" if count > dark else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=font_size, color=color)
    figure.savefig(path, dpi=100)


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
    arrays.update({name: value for name, value in metadata.items() if value is not None})
    with open(path, "wb") as file:  # a file object keeps np.savez from appending ".npz"
        np.savez(file, **arrays)


def load_model(path: Path) -> "KMeans":
    """A fitted KMeans from save_model's file; its predict assigns new images."""
    from .kmeans import KMeans

    with np.load(path, allow_pickle=False) as stored:
        version = int(stored["format_version"])
        if version != MODEL_FORMAT_VERSION:
            raise ValueError(f"{path}: model format {version}, this version reads {MODEL_FORMAT_VERSION}")
        centers = stored["cluster_centers"]
        model = KMeans(n_clusters=len(centers), init=centers)
        model.cluster_centers_ = centers
        model.inertia_ = float(stored["inertia"])
        model.n_iter_ = int(stored["n_iter"])
        model.converged_ = bool(stored["converged"])
        model.n_features_in_ = centers.shape[1]
    return model


# --- across runs -----------------------------------------------------------------------------


def update_summary(root: Path, dataset_name: str, row: dict) -> Path:
    """Put one K's row into root/<dataset>/summary.csv (replacing that K's row), redraw elbow.png.

    Safe for several processes at once: the read-modify-write holds an exclusive lock, and
    both files are replaced atomically, so readers never see a half-written file. A damaged
    summary.csv raises SummaryError and is left as it is.
    """
    unknown = row.keys() - set(SUMMARY_COLUMNS)
    if unknown or "k" not in row:
        raise ValueError(f"a summary row needs 'k' and only {SUMMARY_COLUMNS}; got {sorted(row)}")
    folder = Path(root) / dataset_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.csv"
    with _locked(folder / ".summary.lock"):
        rows = {int(old["k"]): old for old in read_summary(path)}
        rows[int(row["k"])] = {
            name: "" if row.get(name) is None else str(row[name]) for name in SUMMARY_COLUMNS
        }
        lines = [",".join(SUMMARY_COLUMNS)]
        lines += [",".join(rows[k].get(name, "") for name in SUMMARY_COLUMNS) for k in sorted(rows)]
        # both written before either replaces its file: a failure (disk full) leaves both as they were
        with _replacing(path) as summary, _replacing(folder / "elbow.png") as elbow:
            summary.write_text("\n".join(lines) + "\n")
            _draw_elbow(elbow, dataset_name, [rows[k] for k in sorted(rows)])
    return path


class SummaryError(ValueError):
    """A summary.csv that cannot be read back (edited by hand, say); str() is one line for the user."""


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary.csv: none if it is missing or empty, SummaryError if it is damaged.

    Checked as strictly as update_summary needs it: the same number of fields on every line, a
    whole number K, numbers (or nothing) for inertia and accuracy, which the elbow plot draws.
    """
    fix = "correct or delete that line, or move the file away (each k<K>/summary.json keeps its run)"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise SummaryError(f"{path} is not the text file kmeans-mnist writes: move it away") from None
    if not lines:
        return []
    names = lines[0].split(",")
    if "k" not in names:
        raise SummaryError(f"{path} line 1: the header has no 'k' column; {fix}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != len(names):
            raise SummaryError(
                f"{path} line {number}: {len(fields)} fields, the header has {len(names)}; {fix}"
            )
        row = dict(zip(names, fields, strict=True))
        bad = [
            name for name in ("k", "inertia", "accuracy") if not _summary_value_ok(name, row.get(name, ""))
        ]
        if bad:
            raise SummaryError(
                f"{path} line {number}: {bad[0]} {row[bad[0]][:20]!r} is not a valid value; {fix}"
            )
        rows.append(row)
    return rows


def _summary_value_ok(name: str, text: str) -> bool:
    if name == "k":
        return text.isdigit() and int(text) >= 1
    try:
        return not text or math.isfinite(float(text))
    except ValueError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path (created if missing) for the duration."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temp path beside path; on success it atomically replaces path, else it is removed."""
    temporary = _sibling(path, "tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _draw_elbow(path: Path, dataset_name: str, rows: list[dict[str, str]]) -> None:
    """Inertia against K, with accuracy on a second axis when any run knew the labels."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.add_subplot()
    ks = [int(row["k"]) for row in rows]
    inertia = [float(row["inertia"]) if row.get("inertia") else math.nan for row in rows]
    axes.plot(ks, inertia, "o-", color="tab:blue")
    axes.set_xlabel("K (clusters)")
    axes.set_ylabel("inertia", color="tab:blue")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{dataset_name}: elbow")
    known = [(k, float(row["accuracy"])) for k, row in zip(ks, rows, strict=True) if row.get("accuracy")]
    if known:
        accuracy_axes = axes.twinx()
        accuracy_axes.plot(*zip(*known, strict=True), "s--", color="tab:orange")
        accuracy_axes.set_ylabel("accuracy", color="tab:orange")
    figure.savefig(path, format="png", dpi=100)
