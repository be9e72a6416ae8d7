"""`kmeans-mnist predict`: a saved model.npz assigns new images to its clusters.

    model = read_model(Path("output/mnist/k10/model.npz"))
    clusters, distances = assign(data.all_pixel, model.centers)
    write_predictions(Path("test.csv"), data.labels, clusters, distances)

The model's arrays are read with numpy alone (no pickle, no scikit-learn), and the assignment is
plain numpy: nearest centre by squared Euclidean distance, as the fit assigns, with near ties
settled by exact differences. Problems with the user's files raise PredictError (one line).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache

CHUNK_ROWS = 4096
MODEL_FORMAT_VERSION = 1  # output.save_model's format
TIE_MARGIN = 1e-9  # relative gap between the two nearest centres below which exact differences decide


class PredictError(ValueError):
    """A problem with the model file or the output file; str() is one line meant for the user."""


@dataclass(frozen=True)
class SavedModel:
    centers: np.ndarray  # K x D float64
    image_shape: tuple[int, int]


def read_model(path: Path) -> SavedModel:
    """The centres and image shape of a model.npz written by a run (output.save_model)."""
    hint = "give the model.npz that a run wrote (output/<dataset>/k<K>/model.npz)"
    try:
        with cache.open_regular(path) as file:
            stored = np.load(file, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise PredictError(f"{path} is not a model file kmeans-mnist wrote (a single array): {hint}")
            with stored:
                missing = {"cluster_centers", "format_version"} - set(stored.files)
                if missing:
                    raise PredictError(
                        f"{path} is not a model file kmeans-mnist wrote (no {min(missing)}): {hint}"
                    )
                version = int(stored["format_version"])
                centers = np.asarray(stored["cluster_centers"], dtype=np.float64)
                shape = stored["image_shape"] if "image_shape" in stored.files else None
    except PredictError:
        raise
    except FileNotFoundError:
        raise PredictError(f"model file {path} not found: {hint}") from None
    except cache.NotRegularFile as error:
        raise PredictError(f"{error}: {hint}") from None
    except OSError as error:
        raise PredictError(f"cannot read {path}: {error.strerror or error}") from None
    except (ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise PredictError(
            f"{path} is not a model file kmeans-mnist wrote ({type(error).__name__}): {hint}"
        ) from None
    if version != MODEL_FORMAT_VERSION:
        raise PredictError(
            f"{path} is a model of format {version}; this version reads format {MODEL_FORMAT_VERSION}"
        )
    if centers.ndim != 2 or not len(centers) or not np.isfinite(centers).all():
        raise PredictError(
            f"{path} holds no usable representatives (cluster_centers {centers.shape}): {hint}"
        )
    if shape is None or np.shape(shape) != (2,) or int(shape[0]) * int(shape[1]) != centers.shape[1]:
        raise PredictError(f"{path} does not say the size of its images (image_shape): {hint}")
    return SavedModel(centers, (int(shape[0]), int(shape[1])))


def assign(pixels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centre of each row (0..K-1) and the Euclidean distance to it, chunk by chunk.

    Distances come from |x|^2 - 2 x.c + |c|^2 in float64; where the two nearest are within
    TIE_MARGIN of each other, the exact differences decide (lowest index on an exact tie, as the fit).
    """
    centers = np.asarray(centers, dtype=np.float64)
    center_norms = np.einsum("ij,ij->i", centers, centers)
    clusters = np.empty(len(pixels), dtype=np.int64)
    distances = np.empty(len(pixels), dtype=np.float64)
    for start in range(0, len(pixels), CHUNK_ROWS):
        rows = np.asarray(pixels[start : start + CHUNK_ROWS], dtype=np.float64)
        norms = np.einsum("ij,ij->i", rows, rows)
        squared = norms[:, None] - 2 * rows @ centers.T + center_norms[None, :]
        best = np.argmin(squared, axis=1)
        if len(centers) > 1:
            two = np.partition(squared, 1, axis=1)[:, :2]
            scale = norms + center_norms.max()
            for row in np.flatnonzero(two[:, 1] - two[:, 0] <= TIE_MARGIN * scale):
                exact = np.square(rows[row] - centers).sum(axis=1)
                best[row] = int(np.argmin(exact))
        clusters[start : start + len(rows)] = best
        distances[start : start + len(rows)] = np.sqrt(np.square(rows - centers[best]).sum(axis=1))
    return clusters, distances


def check_output(path: Path) -> None:
    """Refuse an --output FILE that cannot be written, before any work."""
    if path.is_dir():
        raise PredictError(f"--output {path} is a folder: give a file name, e.g. {path / 'predictions.csv'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise PredictError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PredictError(f"cannot write {path}: no permission to write in {parent}")


def write_predictions(
    path: Path | None, labels: np.ndarray | None, clusters: np.ndarray, distances: np.ndarray
) -> None:
    """index,label,cluster,distance rows (clusters 1..K, label empty if unknown), as assignments.csv.

    To `path` through a temporary file renamed into place (never half a file), or to stdout.
    """
    numbers = (clusters + 1).tolist()
    label_texts = [""] * len(numbers) if labels is None else labels.tolist()
    rows = zip(label_texts, numbers, distances.tolist(), strict=True)
    text = "index,label,cluster,distance\n" + "".join(
        f"{index},{label},{number},{distance:.6g}\n" for index, (label, number, distance) in enumerate(rows)
    )
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    handle, temporary = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="ascii", newline="\n") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise PredictError(f"could not write {path}: {error.strerror or error}") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
