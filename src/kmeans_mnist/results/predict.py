"""`kmeans-mnist predict`: a saved model.npz assigns new images to its clusters.

    model = read_model(Path("output/mnist/k10/model.npz"))
    clusters, distances = assign(data.all_pixel, model.centers)
    write_predictions(Path("test.csv"), data.labels, clusters, distances)

The model's arrays are read with numpy alone (no pickle, no scikit-learn), and the images are
assigned by the pure-NumPy engine's nearest-centre code, as the fit assigns them. Problems with
the user's files raise PredictError (one line).
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

from ..data import cache

CHUNK_ROWS = 4096
MODEL_FORMAT_VERSION = 1  # output.save_model's format


class PredictError(ValueError):
    """A problem with the model file or the output file; str() is one line meant for the user."""


@dataclass(frozen=True)
class SavedModel:
    centers: np.ndarray  # K x D float64
    image_shape: tuple[int, int]
    channels: int = 1  # 3: fitted on colour (RGB) images, D = 3*H*W
    resize: str | None = None  # how the fit fitted images of another size (--resize), if it did


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
                channels = int(stored["channels"]) if "channels" in stored.files else 1
                resize = str(stored["resize"]) if "resize" in stored.files else None
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
    if (
        shape is None
        or np.shape(shape) != (2,)
        or channels not in (1, 3)
        or int(shape[0]) * int(shape[1]) * channels != centers.shape[1]
    ):
        raise PredictError(f"{path} does not say the size of its images (image_shape, channels): {hint}")
    if resize not in (None, "stretch", "pad", "crop"):
        raise PredictError(f"{path} records an unknown resize mode {resize!r}: {hint}")
    return SavedModel(centers, (int(shape[0]), int(shape[1])), channels, resize)


def assign(pixels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centre of each row (0..K-1), by the engine's own rule (so the clusters of the
    images a model was fitted on are the fit's), and the Euclidean distance to it (float64)."""
    from ..engine.lloyd import labels_inertia

    centers = np.asarray(centers, dtype=np.float64)
    labels, _ = labels_inertia(pixels, centers)
    clusters = labels.astype(np.int64)
    distances = np.empty(len(pixels), dtype=np.float64)
    for start in range(0, len(pixels), CHUNK_ROWS):
        rows = np.asarray(pixels[start : start + CHUNK_ROWS], dtype=np.float64)
        own = centers[clusters[start : start + len(rows)]]
        distances[start : start + len(rows)] = np.sqrt(np.square(rows - own).sum(axis=1))
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
    path: Path | None,
    labels: np.ndarray | None,
    clusters: np.ndarray,
    distances: np.ndarray,
    paths: np.ndarray | None = None,
) -> None:
    """index,label,cluster,distance rows (clusters 1..K, label empty if unknown), as assignments.csv;
    index,path,label,... when the images came from files (paths: Dataset.paths, quoted as CSV needs).

    To `path` through a temporary file renamed into place (never half a file), or to stdout.
    """
    from .csvfile import field

    numbers = (clusters + 1).tolist()
    label_texts = [""] * len(numbers) if labels is None else labels.tolist()
    path_texts = [""] * len(numbers) if paths is None else [field(str(p)) + "," for p in paths]
    rows = zip(path_texts, label_texts, numbers, distances.tolist(), strict=True)
    header = f"index,{'path,' if paths is not None else ''}label,cluster,distance\n"
    text = header + "".join(
        f"{index},{file}{label},{number},{distance:.6g}\n"
        for index, (file, label, number, distance) in enumerate(rows)
    )
    if path is None:
        sys.stdout.flush()
        if hasattr(sys.stdout, "buffer"):  # UTF-8 whatever the locale: file names may be any text
            sys.stdout.buffer.write(text.encode("utf-8"))
        else:
            sys.stdout.write(text)
        sys.stdout.flush()
        return
    handle, temporary = tempfile.mkstemp(
        dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as file:
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
