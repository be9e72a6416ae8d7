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
    centers: np.ndarray  # K x D float64 (K x N for a model fitted in an N-dimensional PCA space)
    image_shape: tuple[int, int]
    features: str = "pixels"  # the space the model was fitted in ("pixels", "pca:50")
    pca_mean: np.ndarray | None = None  # H*W float64: with pca_basis, pixels -> the model's space
    pca_basis: np.ndarray | None = None  # H*W x N float64

    def points(self, pixels: np.ndarray) -> np.ndarray:
        """The images (N x H*W) in the model's space: the pixels, or their PCA coordinates."""
        if self.pca_basis is None:
            return pixels
        from ..features import PCA

        return PCA(self.pca_mean, self.pca_basis, np.zeros(self.pca_basis.shape[1])).transform(pixels)


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
                features = str(stored["features"]) if "features" in stored.files else "pixels"
                if features.startswith("umap"):
                    raise PredictError(
                        f"{path} was fitted in the {features} feature space: a UMAP embedding cannot be "
                        "saved without pickle, which kmeans-mnist never loads, so new images cannot be "
                        "placed in it; fit with --features pca:50 (predict works) or cluster the new "
                        "images together with the old in one run"
                    )
                pca = None
                if features != "pixels":
                    pca = (
                        np.asarray(stored["pca_mean"], dtype=np.float64),
                        np.asarray(stored["pca_basis"], dtype=np.float64),
                    )
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
    n_pixels = int(shape[0]) * int(shape[1]) if shape is not None and np.shape(shape) == (2,) else -1
    if pca is not None:
        mean, basis = pca
        if (
            mean.shape != (n_pixels,)
            or basis.shape != (n_pixels, centers.shape[1])
            or not (np.isfinite(mean).all() and np.isfinite(basis).all())
        ):
            raise PredictError(f"{path} holds a damaged {features} basis (pca_mean, pca_basis): {hint}")
        return SavedModel(centers, (int(shape[0]), int(shape[1])), features, mean, basis)
    if n_pixels != centers.shape[1]:
        raise PredictError(f"{path} does not say the size of its images (image_shape): {hint}")
    return SavedModel(centers, (int(shape[0]), int(shape[1])))


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
