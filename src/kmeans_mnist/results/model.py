"""model.npz, the one file that carries a fitted model: written by a run, read by `predict` and
by `kmeans_mnist.load_model`.

    save_model(folder / "model.npz", fitted, dataset="mnist", image_shape=(28, 28))
    saved = read_model(path)          # SavedModel: centres, image shape, fit statistics
    model = load_model(path)          # a fitted KMeans whose predict assigns new images

One writer, one reader, one format number: the command line and the API cannot disagree on
what a model file is. The arrays are read with NumPy alone (allow_pickle=False: a model file
from someone else runs no code), from a regular file only (a named pipe would block the reader).
A file that is not a readable model raises ModelError (a ValueError, one line naming the file);
a file that cannot be opened at all raises the OSError of the system (missing, no permission).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data import cache

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from ..engine.estimator import KMeans

MODEL_FORMAT_VERSION = 1  # what save_model writes; read_model reads this format only
MODEL_HINT = "give the model.npz that a run wrote (output/<dataset>/k<K>/model.npz)"
_REQUIRED = ("format_version", "cluster_centers", "inertia", "n_iter", "converged")


class ModelError(ValueError):
    """A file that is not a readable model saved by save_model (damaged, or another file);
    str() is one line naming the file."""


@dataclass(frozen=True)
class SavedModel:
    """What a model file holds: the centres (K x D float64, finite), the images' height and
    width (None when the file does not say: models saved from the API without it), and the
    statistics of the fit that made it. Its repr leaves the arrays out."""

    centers: np.ndarray = field(repr=False)  # K x D (K x N for a model fitted in an N-dim PCA space)
    image_shape: tuple[int, int] | None
    inertia: float
    n_iter: int
    converged: bool
    channels: int = 1  # 3: fitted on colour (RGB) images, D = 3*H*W pixels
    resize: str | None = None  # how the fit fitted images of another size (--resize), if it did
    features: str = "pixels"  # the space the model was fitted in ("pixels", "pca:50")
    # with a PCA model, pixels -> the model's space: (pixels - pca_mean) @ pca_basis
    pca_mean: np.ndarray | None = field(default=None, repr=False)  # D, float64
    pca_basis: np.ndarray | None = field(default=None, repr=False)  # D x N, float64

    def points(self, pixels: np.ndarray) -> np.ndarray:
        """Images (M x D pixels) in the model's space: the pixels, or their PCA coordinates."""
        if self.pca_basis is None:
            return pixels
        from ..features import PCA

        return PCA(self.pca_mean, self.pca_basis, np.zeros(self.pca_basis.shape[1])).transform(pixels)


def save_model(path: Path, model, **metadata) -> None:
    """Centres and metadata of a fitted model in an .npz (no pickle); None values are left out.

    Written in place: the caller writes into a folder it swaps in whole (results/run.py)."""
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


def read_model(path: Path) -> SavedModel:
    """The model in a file save_model wrote. ModelError (naming the file) when it is not one,
    OSError when it cannot be opened (FileNotFoundError, PermissionError, cache.NotRegularFile)."""
    try:
        with cache.open_regular(path) as file:
            stored = np.load(file, allow_pickle=False)
            if not isinstance(stored, np.lib.npyio.NpzFile):
                raise ModelError(
                    f"{path} is not a model file kmeans-mnist wrote (a single array): {MODEL_HINT}"
                )
            with stored:
                missing = [name for name in _REQUIRED if name not in stored.files]
                if missing:
                    raise ModelError(
                        f"{path} is not a model file kmeans-mnist wrote (no {missing[0]}): {MODEL_HINT}"
                    )
                version = int(stored["format_version"])
                if version != MODEL_FORMAT_VERSION:
                    raise ModelError(
                        f"{path} is a model of format {version}; this version reads format {MODEL_FORMAT_VERSION}"
                    )
                centers = stored["cluster_centers"]
                shape = stored["image_shape"] if "image_shape" in stored.files else None
                statistics = (float(stored["inertia"]), int(stored["n_iter"]), bool(stored["converged"]))
                channels = int(stored["channels"]) if "channels" in stored.files else 1
                resize = str(stored["resize"]) if "resize" in stored.files else None
                features = str(stored["features"]) if "features" in stored.files else "pixels"
                if features.startswith("umap"):
                    raise ModelError(
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
    except ModelError:
        raise
    except OSError:  # the file itself could not be opened or read: the caller words it
        raise
    except (
        ValueError,
        TypeError,
        EOFError,
        KeyError,
        IndexError,
        OverflowError,
        zipfile.BadZipFile,
    ) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if reason.startswith("This file contains pickled"):  # NumPy's words for neither .npz nor .npy
            reason = "not an .npz file"
        raise ModelError(f"{path} is not a model file kmeans-mnist wrote ({reason}): {MODEL_HINT}") from None
    if centers.ndim != 2 or 0 in centers.shape or centers.dtype.kind not in "fiu":
        raise ModelError(
            f"{path} holds no usable representatives (cluster_centers {centers.dtype} {centers.shape}): {MODEL_HINT}"
        )
    centers = centers.astype(np.float64)
    if not np.all(np.isfinite(centers)):
        raise ModelError(f"{path}: cluster_centers holds NaN or infinity: {MODEL_HINT}")
    if channels not in (1, 3):
        raise ModelError(f"{path} records {channels} channels (1: grey, 3: colour): {MODEL_HINT}")
    if resize not in (None, "stretch", "pad", "crop"):
        raise ModelError(f"{path} records an unknown resize mode {resize!r}: {MODEL_HINT}")
    if pca is None:
        image_shape = _image_shape(
            path, shape, centers.shape[1] // channels if centers.shape[1] % channels == 0 else -1
        )
        return SavedModel(centers, image_shape, *statistics, channels, resize)
    mean, basis = pca
    if (
        mean.ndim != 1
        or basis.shape != (len(mean), centers.shape[1])
        or not (np.isfinite(mean).all() and np.isfinite(basis).all())
    ):
        raise ModelError(f"{path} holds a damaged {features} basis (pca_mean, pca_basis): {MODEL_HINT}")
    image_shape = _image_shape(path, shape, len(mean) // channels if len(mean) % channels == 0 else -1)
    return SavedModel(centers, image_shape, *statistics, channels, resize, features, mean, basis)


def _image_shape(path: Path, shape, n_features: int) -> tuple[int, int] | None:
    if shape is None:
        return None
    try:
        height, width = (int(value) for value in np.asarray(shape).reshape(-1))
    except (ValueError, TypeError, OverflowError):
        height = width = 0
    if height < 1 or width < 1 or height * width != n_features:
        raise ModelError(
            f"{path} gives an image_shape ({np.asarray(shape).tolist()}) that does not match its "
            f"{n_features} features: {MODEL_HINT}"
        )
    return height, width


def load_model(path: Path) -> KMeans | Pipeline:
    """A fitted KMeans from save_model's file; its predict assigns new images.

    A model fitted in a PCA space (--features pca:N) comes as a scikit-learn Pipeline: the
    projection of the pixels into that space, then the KMeans (`pipeline["kmeans"]`, its centres in
    that space), so that predict takes pixels, as the command line's predict does.

    Raises ModelError (a ValueError) naming the file when it is not a readable model, OSError
    when it cannot be opened at all (missing, no permission).
    """
    from ..engine.estimator import KMeans

    saved = read_model(path)
    model = KMeans(n_clusters=len(saved.centers), init=saved.centers)
    model.cluster_centers_ = saved.centers
    model.inertia_ = saved.inertia
    model.n_iter_ = saved.n_iter
    model.converged_ = saved.converged
    model.n_features_in_ = saved.centers.shape[1]
    model._n_features_out = len(saved.centers)
    if saved.pca_basis is None:
        return model
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline([("pca", FunctionTransformer(saved.points)), ("kmeans", model)])
