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
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import atomic
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

    try:
        labels, distances = labels_distances(pixels, np.asarray(centers, dtype=np.float64))
    except ValueError as error:  # centres that cannot meet these images at one scale
        raise PredictError(f"cannot assign these images to the model's representatives: {error}") from None
    return labels.astype(np.int64), distances


STANDARD_OUTPUT = "-"  # --output - : standard output, as many tools spell it
WRITE_BLOCK_ROWS = 65_536  # rows formatted at a time (8.1 million rows never become one string)


@dataclass(frozen=True)
class Output:
    """Where the predictions go: `path` None for standard output; `replace` True for a regular
    file (or a new one), written beside it and renamed over it; False for what is not a regular
    file (a named pipe, a device, a terminal), written into as it is."""

    path: Path | None
    replace: bool


@dataclass
class Written:
    """How far write_predictions got, for the words of an interrupted run: `started` once the
    target may hold part of the rows (never for a replaced file), `replaced` once the new file
    is in place."""

    started: bool = False
    replaced: bool = False


def check_output(text: str | None, inputs: list[Path]) -> Output:
    """Where --output TEXT writes, refused before any work when it cannot be written or when it is
    one of the `inputs` (the model file, the data's file or folders: through links, hard links
    included), which predict must never write over."""
    if text is None or text == STANDARD_OUTPUT:
        if sys.stdout is None:
            raise PredictError("standard output is closed: give --output FILE")
        return Output(None, False)
    path = Path(text)
    try:
        status = os.stat(path)  # follows links: what a write would reach
    except FileNotFoundError:
        status = None
    except OSError as error:
        raise PredictError(f"cannot use --output {path}: {error.strerror or error}") from None
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise PredictError(f"--output {path} is a folder: give a file name, e.g. {path / 'predictions.csv'}")
    if status is not None and not stat.S_ISREG(status.st_mode):
        return Output(path, False)  # a pipe, a device, a terminal: written into, never replaced
    if status is not None:
        _refuse_inputs(path, status, inputs)
    target = Path(os.path.realpath(path))  # a link to a file stays a link: its file is replaced
    parent = target.parent
    if not parent.is_dir():
        raise PredictError(f"cannot write {path}: folder {Path(text).parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PredictError(f"cannot write {path}: no permission to write in {parent}")
    return Output(target, True)


def _refuse_inputs(path: Path, status: os.stat_result, inputs: list[Path]) -> None:
    """PredictError when the existing file `path` (whose os.stat is `status`) is one of the inputs,
    or lies in a folder among them (a file predict may read)."""
    real = os.path.realpath(path)
    for source in inputs:
        if os.path.isdir(source):
            if _inside(real, os.path.realpath(source)) or (
                status.st_nlink > 1 and _holds_inode(os.path.realpath(source), status)
            ):
                raise PredictError(
                    f"--output {path} is a file in {source}, which predict reads: choose a file outside it"
                )
        elif _same_file(source, path):
            raise PredictError(
                f"--output {path} is {source}, which predict reads: choose another file for the predictions"
            )


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # on another drive
        return False


def _same_file(one: Path, other: Path) -> bool:
    try:
        return os.path.samefile(one, other)  # through links, hard links included (same inode)
    except OSError:  # missing or unreadable: not a file predict will read
        return False


def _holds_inode(folder: str, status: os.stat_result) -> bool:
    """Whether a file under folder is the file of `status` (a hard link to it)."""
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                other = os.stat(os.path.join(root, name))
                if (other.st_dev, other.st_ino) == (status.st_dev, status.st_ino):
                    return True
    return False


def write_predictions(
    output: Output,
    labels: np.ndarray | None,
    clusters: np.ndarray,
    distances: np.ndarray,
    written: Written | None = None,
    held=contextlib.nullcontext,
    paths: np.ndarray | None = None,
) -> None:
    """index,label,cluster,distance rows (clusters 1..K, label empty if unknown), as assignments.csv;
    index,path,label,... when the images came from files (paths: Dataset.paths, quoted as CSV needs).

    A regular file: through a temporary file beside it, renamed into place (never half a file;
    on any failure or interrupt the temporary file is gone and the old file intact). Anything
    else (standard output, a pipe, a device): written into as it is. `written` records how far it
    got; `held()` is a context in which interrupts wait (the rename and its record are one step).
    """
    written = Written() if written is None else written
    if not output.replace:
        written.started = True
        if output.path is None:
            out = _utf8_stdout()
            try:
                _write_rows(out, labels, clusters, distances, paths)
            finally:
                if out is not sys.stdout:
                    out.flush()
                    out.detach()  # sys.stdout keeps its buffer (a wrapper closes what it wraps)
            sys.stdout.flush()
            return
        try:
            with open(output.path, "w", encoding="utf-8", newline="\n") as file:  # no O_CREAT race: it exists
                _write_rows(file, labels, clusters, distances, paths)
        except OSError as error:
            raise PredictError(f"could not write {output.path}: {error.strerror or error}") from None
        return
    path = output.path

    def replaced() -> None:
        written.replaced = True

    try:
        with (
            atomic.replacing(path, held=held, replaced=replaced) as temporary,
            open(temporary, "w", encoding="utf-8", newline="\n") as file,
        ):
            _write_rows(file, labels, clusters, distances, paths)
    except OSError as error:
        raise PredictError(f"could not write {path}: {error.strerror or error}") from None


def _write_rows(
    file,
    labels: np.ndarray | None,
    clusters: np.ndarray,
    distances: np.ndarray,
    paths: np.ndarray | None = None,
) -> None:
    from .csvfile import field

    file.write(f"index,{'path,' if paths is not None else ''}label,cluster,distance\n")
    for start in range(0, len(clusters), WRITE_BLOCK_ROWS):
        rows = slice(start, start + WRITE_BLOCK_ROWS)
        numbers = (clusters[rows] + 1).tolist()
        label_texts = [""] * len(numbers) if labels is None else labels[rows].tolist()
        path_texts = [""] * len(numbers) if paths is None else [field(str(p)) + "," for p in paths[rows]]
        values = zip(path_texts, label_texts, numbers, distances[rows].tolist(), strict=True)
        file.write(
            "".join(
                f"{index},{name}{label},{number},{distance:.6g}\n"
                for index, (name, label, number, distance) in enumerate(values, start=start)
            )
        )


def _utf8_stdout():
    """Standard output as UTF-8 text whatever the locale: file names may be any text."""
    import io

    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        return sys.stdout
    sys.stdout.flush()
    return io.TextIOWrapper(buffer, encoding="utf-8", newline="\n", write_through=True)
