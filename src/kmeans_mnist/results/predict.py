"""`kmeans-mnist predict`: a saved model.npz assigns new images to its clusters.

    model = read_model(Path("output/mnist/k10/model.npz"))
    clusters, distances = assign(data.all_pixel, model.centers)
    write_predictions(Path("test.csv"), data.labels, clusters, distances)

The model file is read by results/model.py (numpy alone: no pickle, no scikit-learn), and the
images are assigned by the pure-NumPy engine's nearest-centre code, as the fit assigns them. Problems with
the user's files raise PredictError (one line).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..data import cache
from . import model
from .model import SavedModel


class PredictError(ValueError):
    """A problem with the model file or the output file; str() is one line meant for the user."""


def read_model(path: Path) -> SavedModel:
    """The model in `path` (results/model.py reads it), which must say its image shape."""
    try:
        saved = model.read_model(path)
    except model.ModelError as error:
        raise PredictError(str(error)) from None
    except FileNotFoundError:
        raise PredictError(f"model file {path} not found: {model.MODEL_HINT}") from None
    except cache.NotRegularFile as error:
        raise PredictError(f"{error}: {model.MODEL_HINT}") from None
    except OSError as error:
        raise PredictError(f"cannot read {path}: {error.strerror or error}") from None
    if saved.image_shape is None:
        raise PredictError(f"{path} does not say the size of its images (image_shape): {model.MODEL_HINT}")
    return saved


def assign(pixels: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centre of each row (0..K-1), by the engine's own rule (so the clusters of the
    images a model was fitted on are the fit's), and the Euclidean distance to it (float64, the
    numbers of the fit's assignments.csv), block by block."""
    from ..engine.lloyd import labels_distances

    labels, distances = labels_distances(pixels, np.asarray(centers, dtype=np.float64))
    return labels.astype(np.int64), distances


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
