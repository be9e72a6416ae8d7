"""Your own images as arrays: a folder of images, IDX files, a .npy/.npz file, or a CSV file.

    found = read_source(Path("my-digits/"))     # what load_dataset("files", data_dir=...) reads
    found.images, found.labels, found.name

What a path holds is told by what it is:
- a folder holding IDX files (`*-images-idx3-ubyte[.gz]`, as MNIST, Fashion-MNIST, EMNIST and
  KMNIST ship): the images, with the matching `*-labels-idx1-ubyte[.gz]` when present; names
  with "train" come before names with "t10k"/"test", and `split` picks one of them;
- any other folder: its images (whatever Pillow reads, see images.py), in colour when any of
  them has colour (N x H x W x 3, RGB; grey ones repeated in the three channels) unless
  `grey`, else grey; sub-folders name the classes, as torchvision's ImageFolder does (sorted,
  labels 0..C-1), and without sub-folders there are no labels. Each image keeps its path
  relative to the folder (Found.paths). Files that are not images (by their suffix) are
  skipped and counted; hidden files and folders are left out. Every image must have one size
  unless `size` fits them all (`resize`: stretch, pad or crop);
- an IDX file (its labels file beside it is found as in a folder);
- `.npy`: N x H x W (or N x D with `shape`, or D a square), or N x H x W x 3 colour (grey with
  `grey`, and grey when its three channels are equal), memory-mapped, never copied when it
  holds uint8; `.npz`: images and optional labels by key (`keys`, or the usual names);
- `.csv`: rows of `label,pixel,...` or `pixel,...`, a header line or none (column numbers
  0,1,2,..., as pandas writes them, are a header too); the image is square unless `shape` says
  otherwise (see `_csv_layout`).
Pixels are 0..255; other integer or float arrays in that range are converted (floats in 0..1
are scaled by 255). Every problem is a DatasetError naming the file and what to do. Pickled
arrays are never loaded. Headers are checked against the file before the data is read: a file
cut short says so, a .gz is decompressed no further than its header promises, and a `plan`
callback sees the memory the images will take before any is read (see `Planned`).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache
from .errors import DATASETS, DatasetError, require_file
from .images import pillow_warnings_off

KINDS = "a folder of images, IDX files, a .npy/.npz file or a CSV file"
IDX_IMAGES = re.compile(r"^(?P<head>.*)images(?P<sep>[-.])idx3-ubyte(?P<gz>\.gz)?$")
IDX_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
NPZ_NAMES = (("images", "labels"), ("x", "y"), ("X", "y"), ("data", "labels"), ("data", "targets"))
DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Found:
    """What read_source found: the arrays, and words for people."""

    name: str
    images: np.ndarray  # uint8 N x H x W, or N x H x W x 3 (a memory map for an uncompressed uint8 source)
    labels: np.ndarray | None  # int64 N
    class_names: dict[int, str] | None
    source: str
    n_unreadable: int = 0
    paths: np.ndarray | None = None  # object array of str: each image's file, relative to the folder
    root: Path | None = None  # the folder the paths are relative to (absolute)
    converted_to_grey: bool = False
    n_not_images: int = 0


@dataclass(frozen=True)
class Planned:
    """What reading a source will hold in memory, known from its headers (or the file count and
    --size) before its images are read: handed to read_source's `plan`, which may refuse it."""

    source: Path
    n_images: int
    image_shape: tuple[int, int]  # height, width
    load_bytes: int  # held at the peak of the reading, at least
    resident_bytes: int  # held by the images once read (0: memory-mapped, in the page cache)
    channels: int = 1  # 3 for colour images

    @property
    def pixels(self) -> int:
        """Values per image (D): H*W, or 3*H*W in colour."""
        return self.image_shape[0] * self.image_shape[1] * self.channels


class PlanRefused(DatasetError):
    """The plan's exception on its way out of the readers, which let a DatasetError through."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def _passed_through(plan: Callable[[Planned], None] | None) -> Callable[[Planned], None]:
    """plan, with whatever it raises wrapped so that no reader's handler rewords it."""

    def call(planned: Planned) -> None:
        if plan is None:
            return
        try:
            plan(planned)
        except Exception as error:
            raise PlanRefused(error) from error

    return call


def read_source(
    path: Path,
    *,
    split: str = "all",
    size: tuple[int, int] | None = None,
    shape: tuple[int, int] | None = None,
    keys: tuple[str, str | None] | None = None,
    skip_unreadable: bool = False,
    cache_dir: str | Path | None = None,
    grey: bool = False,
    resize: str = "stretch",
    plan: Callable[[Planned], None] | None = None,
) -> Found:
    """Read the images at `path` (see the module docstring); options that do not apply are refused.

    plan(Planned) is called before the bulk of the images is read, when their number and size are
    known from headers (a folder, IDX, .npy and .npz; not CSV): it raises to refuse the reading.
    A MemoryError while reading is a DatasetError."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist: --data-dir wants {KINDS}") from None
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    if path.is_dir():
        kind = "idx" if _idx_files(path) else "images"
    else:
        if cache.not_regular(mode):
            raise DatasetError(
                f"{path} is {cache.not_regular(mode)}, not a regular file: --data-dir wants {KINDS}"
            )
        kind = _file_kind(path)
    _refuse_options(
        path, kind, split=split, size=size, shape=shape, keys=keys, skip_unreadable=skip_unreadable
    )

    try:
        plan = _passed_through(plan)
        if kind == "images":
            found = _read_image_folder(path, size, skip_unreadable, plan, grey, resize)
        elif kind == "idx":
            found = _read_idx_source(path, split, plan)
        elif kind == "npy":
            found = _read_npy(path, shape, plan, grey)
        elif kind == "npz":
            found = _read_npz(path, split, shape, keys, plan, grey)
        else:
            found = _read_csv(path, shape, cache_dir)
    except PlanRefused as refused:  # the caller's own exception, as it raised it
        raise refused.error from None
    except MemoryError:
        raise DatasetError(
            f"not enough memory to read the images of {path}: use fewer or smaller images"
            + (" (a smaller --size)" if size else "")
        ) from None
    if not len(found.images):
        raise DatasetError(f"{path} holds no images")
    return found


def _file_kind(path: Path) -> str:
    """idx, npy, npz or csv, by the file's name or its first bytes."""
    name = path.name.lower()
    for kind, suffixes in (("npy", (".npy",)), ("npz", (".npz",)), ("csv", (".csv", ".txt"))):
        if name.endswith(suffixes):
            return kind
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return "idx"
    try:
        with cache.open_regular(path) as file:
            start = file.read(6)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    if start.startswith(b"\x93NUMPY"):
        return "npy"
    if start.startswith(b"PK\x03\x04"):
        return "npz"
    if start[:2] == b"\0\0" and len(start) > 3 and start[2] in IDX_TYPES:
        return "idx"
    if start[:1].isdigit() or start[:1].isalpha():
        return "csv"
    if path.suffix.lower() in _image_suffixes():
        raise DatasetError(f"{path} is one image: --data-dir wants the folder holding your images")
    raise DatasetError(f"{path} is not a kind of file kmeans-mnist reads: --data-dir wants {KINDS}")


def _refuse_options(path: Path, kind: str, **options) -> None:
    """Options that mean nothing for this kind of source are an error, not silently ignored."""
    applies = {
        "split": ("idx", "npz"),
        "size": ("images",),
        "shape": ("npy", "npz", "csv"),
        "keys": ("npz",),
        "skip_unreadable": ("images",),
    }
    words = {"images": "a folder of images", "idx": "IDX files", "npy": "a .npy file", "npz": "an .npz file"}
    flags = {
        "split": "--split",
        "size": "--size",
        "shape": "--shape",
        "keys": "--keys",
        "skip_unreadable": "--skip-unreadable",
    }
    for option, value in options.items():
        used = value != "all" if option == "split" else bool(value)
        if used and kind not in applies[option]:
            raise DatasetError(
                f"{flags[option]} does not apply to {path}, which is {words.get(kind, 'a CSV file')}: leave it out"
            )


def slug(path: Path, kind: str) -> str:
    """A short readable name for the output folder: the folder's or file's stem, in lower case."""
    stem = path.resolve().name
    for suffix in (".gz", ".npy", ".npz", ".csv", ".txt"):
        stem = stem.removesuffix(suffix)
    text = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-") or "files"
    return f"{text}-{kind}" if text in DATASETS else text  # never the folder of a named dataset


# --- a folder of images ------------------------------------------------------------------------


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {suffix.lower() for suffix in Image.registered_extensions()}


def _images_under(folder: Path, suffixes: set[str]) -> tuple[list[Path], int]:
    """The image files under folder, at any depth, sorted, and how many other files there are;
    hidden files and folders are left out (and not counted)."""
    found, others = [], 0
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in suffixes:
                found.append(Path(root) / name)
            else:
                others += 1
    return found, others


def _image_shape(path: Path) -> tuple[int, int, int] | None:
    """(height, width, channels) from an image file's header (Pillow reads no pixels), or None if
    unreadable; channels 3 unless the mode is a grey one (a guess for the whole folder: the plan
    is for the worst case of colour)."""
    from PIL import Image

    try:
        with pillow_warnings_off(), cache.open_regular(path) as file, Image.open(file) as image:
            grey = image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;16")
            return image.height, image.width, 1 if grey else 3
    except Exception:  # the decoding says what is wrong with it
        return None


def _read_image_folder(
    folder: Path,
    size: tuple[int, int] | None,
    skip_unreadable: bool,
    plan: Callable[[Planned], None],
    grey: bool = False,
    resize: str = "stretch",
) -> Found:
    from .images import decode_image

    suffixes = _image_suffixes()
    try:
        entries = sorted(folder.iterdir())
    except OSError as error:
        raise DatasetError(f"cannot read {folder}: {error.strerror or error}") from error
    visible = [path for path in entries if not path.name.startswith(".")]
    top = [path for path in visible if path.suffix.lower() in suffixes and not path.is_dir()]
    n_other = sum(1 for path in visible if path.suffix.lower() not in suffixes and not path.is_dir())
    classes = {}
    for path in visible:
        if path.is_dir():
            images, others = _images_under(path, suffixes)
            n_other += others
            if images:
                classes[path.name] = images
    if not top and not classes:
        what = "is empty" if not entries else "holds no image files (PNG, JPEG, BMP, GIF, TIFF...)"
        raise DatasetError(f"{folder} {what}: --data-dir wants {KINDS}")
    if top and classes:
        raise DatasetError(
            f"{folder} holds images both at its top ({top[0].name}...) and in sub-folders ({next(iter(classes))}/...), "
            "which name classes: move the top ones into a sub-folder, or point --data-dir at one sub-folder"
        )
    paths = top or [path for images in classes.values() for path in images]
    labels = None if top else np.repeat(np.arange(len(classes)), [len(images) for images in classes.values()])
    header = _image_shape(paths[0])
    image_shape = size or (header[:2] if header else None)
    if image_shape is not None:  # decoded one by one, then stacked: twice the images at the peak
        channels = 1 if grey or (header is not None and header[2] == 1) else 3
        total = len(paths) * image_shape[0] * image_shape[1] * channels
        plan(Planned(folder, len(paths), image_shape, 2 * total, total, channels))

    def decode(path: Path) -> tuple[np.ndarray, bool] | DatasetError:
        try:
            return decode_image(path, size, resize, grey)
        except DatasetError as error:
            return error

    with pillow_warnings_off(), ThreadPoolExecutor(DECODE_THREADS) as pool:  # Pillow decodes without the GIL
        decoded = list(pool.map(decode, paths, chunksize=64))
    bad = [index for index, image in enumerate(decoded) if isinstance(image, DatasetError)]
    if bad and not skip_unreadable:
        raise DatasetError(f"{decoded[bad[0]]}; --skip-unreadable skips (and counts) such files")
    if bad:
        keep = np.setdiff1d(np.arange(len(paths)), bad)
        decoded = [decoded[index] for index in keep]
        paths = [paths[index] for index in keep]
        labels = None if labels is None else labels[keep]
    if not decoded:
        raise DatasetError(f"{folder} holds no readable image ({len(bad):,} unreadable files skipped)")
    converted = grey and any(had_colour for _, had_colour in decoded)
    decoded = [image for image, _ in decoded]
    shapes = Counter(image.shape[:2] for image in decoded)
    if len(shapes) > 1:
        (common, count), (other, _) = shapes.most_common(2)
        example = paths[next(i for i, image in enumerate(decoded) if image.shape[:2] == other)]
        raise DatasetError(
            f"the images in {folder} differ in size (HxW): {count:,} of {len(decoded):,} are {common[0]}x{common[1]} "
            f"but {example} is {other[0]}x{other[1]}; use --size {common[0]}x{common[1]} to fit them all "
            "(--resize stretch, pad or crop)"
        )
    # grey images of a colour folder: the same grey in the three channels
    if any(image.ndim == 3 for image in decoded):
        images = np.stack(
            [image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2) for image in decoded]
        )
    else:
        images = np.stack(decoded)
    classes_found = None if top else dict(enumerate(classes))
    where = f"{folder}: {len(paths):,} images" + (f" in {len(classes)} class folders" if classes else "")
    relative = np.empty(len(paths), dtype=object)
    relative[:] = [path.relative_to(folder).as_posix() for path in paths]
    return Found(
        slug(folder, "images"),
        images,
        labels,
        classes_found,
        where,
        len(bad),
        paths=relative,
        root=folder.resolve(),
        converted_to_grey=converted,
        n_not_images=n_other,
    )


# --- IDX files ---------------------------------------------------------------------------------


def _idx_files(folder: Path) -> list[Path]:
    """The IDX image files in folder (one of a .gz and its uncompressed twin), train before test."""
    try:
        names = sorted(entry.name for entry in folder.iterdir())
    except OSError:
        return []
    found = {}
    for name in names:
        match = IDX_IMAGES.match(name)
        if match and ((match["head"], match["sep"]) not in found or not match["gz"]):
            found[(match["head"], match["sep"])] = folder / name  # the uncompressed twin wins: mapped
    rank = {"train": 0, "test": 1}
    return sorted(found.values(), key=lambda path: (rank.get(_idx_split(path), 2), path.name))


def _idx_split(path: Path) -> str | None:
    name = path.name.lower()
    if "train" in name:
        return "train"
    if "t10k" in name or "test" in name:
        return "test"
    return None


def _read_idx_source(path: Path, split: str, plan: Callable[[Planned], None]) -> Found:
    folder = path if path.is_dir() else path.parent
    image_files = _idx_files(path) if path.is_dir() else [path]
    if split != "all":
        chosen = [file for file in image_files if _idx_split(file) == split]
        if not chosen:
            names = ", ".join(file.name for file in image_files)
            raise DatasetError(
                f"no {split} images among the IDX files of {folder} ({names}): use another --split"
            )
        image_files = chosen
    _plan_idx(folder, image_files, plan)
    parts = []
    for image_file in image_files:
        images = _read_idx(image_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"{image_file} holds a {images.dtype} array of shape {images.shape}: "
                "expected unsigned-byte images (IDX type 0x08, 3 dimensions)"
            )
        labels_file = _idx_labels_file(image_file)
        labels = None
        if labels_file is not None:
            labels = _read_idx(labels_file)
            if labels.ndim != 1 or labels.dtype.kind not in "iu":
                raise DatasetError(f"{labels_file} is not a labels file: expected one whole number per image")
            if len(labels) != len(images):
                raise DatasetError(
                    f"{labels_file} holds {len(labels):,} labels for the {len(images):,} images of "
                    f"{image_file.name}: use the labels file that belongs to these images"
                )
            labels = labels.astype(np.int64)
        parts.append((image_file, images, labels, labels_file))
    with_labels = [part[3] is not None for part in parts]
    if any(with_labels) and not all(with_labels):
        lacking = next(part[0] for part in parts if part[3] is None)
        raise DatasetError(
            f"{lacking.name} in {folder} has no labels file beside it, unlike the others: "
            "add it, or use --split to read only the labelled part"
        )
    images = np.concatenate([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
    labels = None
    if all(with_labels):
        labels = np.concatenate([part[2] for part in parts]) if len(parts) > 1 else parts[0][2]
    names = " + ".join(part[0].name for part in parts)
    return Found(slug(path, "idx"), images, labels, None, f"{folder}: {names}")


def _plan_idx(folder: Path, image_files: list[Path], plan: Callable[[Planned], None]) -> None:
    """plan() the images of these IDX files from their headers: a mapped file costs no memory,
    a .gz file its images, and several files their images once more (they are joined)."""
    headers = []
    for image_file in image_files:
        try:
            with cache.open_regular(image_file) as raw_file:
                gz = image_file.name.endswith(".gz")
                _, dims, _ = _idx_header(image_file, gzip.GzipFile(fileobj=raw_file) if gz else raw_file)
        except Exception:  # reading the file says what is wrong with it
            return
        if len(dims) != 3:
            return
        headers.append((gz, dims))
    total = sum(math.prod(dims) for _, dims in headers)
    joined = total if len(headers) > 1 else 0
    read = sum(math.prod(dims) for gz, dims in headers if gz)
    shape = (headers[0][1][1], headers[0][1][2])
    n_images = sum(dims[0] for _, dims in headers)
    plan(Planned(folder, n_images, shape, read + joined, joined or read))


def _idx_labels_file(image_file: Path) -> Path | None:
    """The labels file that goes with an IDX images file (same name, labels/idx1), .gz or not."""
    match = IDX_IMAGES.match(image_file.name)
    if not match:
        return None
    stem = f"{match['head']}labels{match['sep']}idx1-ubyte"
    for name in (stem, stem + ".gz"):
        if (image_file.parent / name).is_file():
            return image_file.parent / name
    return None


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file's array: memory-mapped when uncompressed, decompressed when .gz.

    A .gz is decompressed into an array of the size its header promises and no further (one byte
    more tells that it holds more than that): a file whose header promises little but that
    decompresses to gigabytes costs what the header promised, not the gigabytes.
    """
    require_file(path, f"{path} does not exist")
    compressed = path.name.endswith(".gz")
    try:
        with cache.open_regular(path) as raw_file:
            file_size = os.fstat(raw_file.fileno()).st_size
            file = gzip.GzipFile(fileobj=raw_file) if compressed else raw_file
            dtype, dims, head_size = _idx_header(path, file)
            expected = head_size + math.prod(dims) * dtype.itemsize
            if not compressed:
                if file_size != expected:
                    raise _cut_off(path, expected, file_size)
                return np.memmap(path, dtype=dtype, mode="r", offset=head_size, shape=tuple(dims))
            if expected > GZIP_MAX_RATIO * file_size + 1024:  # no gzip file this small holds that much
                raise DatasetError(
                    f"{path} is damaged: its header promises {expected:,} bytes, more than a gzip file of "
                    f"{file_size:,} bytes can hold; copy or download it again"
                )
            try:
                payload = np.empty(expected - head_size, dtype=np.uint8)
            except MemoryError:
                raise DatasetError(
                    f"{path} holds {expected / 2**30:,.1f} GiB of images once decompressed, more than "
                    "this machine can hold: decompress it (gunzip) so that it is read without loading it whole"
                ) from None
            found = head_size + _read_into(file, payload)
            if found < expected:
                raise _cut_off(path, expected, found)
            if file.read(1):
                raise DatasetError(
                    f"{path} is damaged: it decompresses to more than the {expected:,} bytes its header "
                    "promises; copy or download it again"
                )
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DatasetError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from error
    return payload.view(dtype).reshape(dims)


GZIP_MAX_RATIO = 1032  # deflate's largest expansion: a gzip file never decompresses to more


def _idx_header(path: Path, file) -> tuple[np.dtype, list[int], int]:
    """The element type, dimensions and header size of the IDX file at its start."""
    header = file.read(4)
    if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in IDX_TYPES or not 1 <= header[3] <= 4:
        raise DatasetError(f"{path} is not an IDX file (its first bytes are not an IDX header)")
    dtype, ndim = np.dtype(IDX_TYPES[header[2]]), header[3]
    sizes = file.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DatasetError(f"{path} is cut off in its header; copy or download it again")
    dims = [int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim)]
    return dtype, dims, 4 + 4 * ndim


def _read_into(file, buffer: np.ndarray) -> int:
    """Read from file into buffer until it is full or the file ends; the bytes read."""
    view, done = memoryview(buffer), 0
    while done < len(view):
        count = file.readinto(view[done : done + (1 << 24)])
        if not count:
            break
        done += count
    return done


def _cut_off(path: Path, expected: int, found: int) -> DatasetError:
    return DatasetError(
        f"{path} is cut off or damaged: its header promises {expected:,} bytes, it holds {found:,}; "
        "copy or download it again"
    )


# --- NumPy files -------------------------------------------------------------------------------


def _read_npy(
    path: Path, shape: tuple[int, int] | None, plan: Callable[[Planned], None], grey: bool = False
) -> Found:
    """A .npy file, memory-mapped after its header is checked: a file cut short is refused here,
    not met as a crash (SIGBUS) when the engine reads the pages that are not there."""
    try:
        with cache.open_regular(path) as file:  # a pipe or folder is refused before numpy opens it
            dtype, array_shape, data_offset = npy_header(path, file)
            file_size = os.fstat(file.fileno()).st_size
        expected = data_offset + math.prod(array_shape) * dtype.itemsize
        if file_size < expected:
            raise _cut_off(path, expected, file_size)
        _plan_array(path, [(dtype, array_shape)], shape, plan, mapped=True)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except DatasetError:
        raise
    except Exception as error:
        raise DatasetError(f"{path} is not a NumPy .npy file that can be read ({error})") from error
    images = _as_images(array, path, "the array", shape)
    images, converted = _colour_or_grey(images, grey)
    return Found(slug(path, "npy"), images, None, None, f"{path}", converted_to_grey=converted)


def _plan_array(
    path: Path,
    arrays: list[tuple[np.dtype, tuple[int, ...]]],
    shape: tuple[int, int] | None,
    plan: Callable[[Planned], None],
    mapped: bool,
) -> None:
    """plan() the images of these arrays (dtype, shape) from their headers: uint8 in a .npy is
    mapped (no memory), other arrays are read whole and converted to uint8 (floats through a
    temporary array as large), several arrays are joined (their images once more)."""
    images = [(dtype, dims) for dtype, dims in arrays if len(dims) in (2, 3, 4) and dims[0]]
    if not images:
        return  # _as_images says what is wrong with them
    dims = images[0][1]
    if len(dims) == 2:
        side = math.isqrt(dims[1])
        image_shape = shape or ((side, side) if side * side == dims[1] else (1, dims[1]))
    else:
        image_shape = (dims[1], dims[2])
    sizes = [(dtype, math.prod(dims)) for dtype, dims in images]
    total = sum(values for _, values in sizes)
    results = 0 if mapped and all(dtype == np.uint8 for dtype, _ in sizes) else total
    transient = max(  # one array at a time: read whole (unless mapped), through a float temporary
        (
            (0 if mapped else dtype.itemsize * values) + (dtype.itemsize * values if dtype.kind == "f" else 0)
            for dtype, values in sizes
            if dtype != np.uint8
        ),
        default=0,
    )
    joined = total if len(sizes) > 1 else 0
    n_images = sum(dims[0] for _, dims in images)
    channels = dims[3] if len(dims) == 4 else 1
    plan(Planned(path, n_images, image_shape, results + transient + joined, joined or results, channels))


def npy_header(path: Path, file, what: str = "") -> tuple[np.dtype, tuple[int, ...], int]:
    """The dtype, shape and data offset in the .npy header at file's position (which it reads);
    DatasetError for a header that is cut off or damaged, or for Python objects (never unpickled)."""
    where = f"{path}{what}"
    start = file.tell()
    try:
        version = np.lib.format.read_magic(file)
        if version == (1, 0):
            array_shape, _, dtype = np.lib.format.read_array_header_1_0(file)
        else:
            array_shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    except (ValueError, EOFError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "EOF" in reason or "truncated" in reason.lower():
            raise DatasetError(f"{where} is cut off in its header: copy or save it again") from error
        raise DatasetError(f"{where} is not a NumPy array file that can be read ({reason})") from error
    if dtype.hasobject:
        raise DatasetError(f"{where} holds Python objects, which are never unpickled: save numeric arrays")
    return dtype, tuple(array_shape), file.tell() - start


def _read_npz(
    path: Path,
    split: str,
    shape: tuple[int, int] | None,
    keys: tuple[str, str | None] | None,
    plan: Callable[[Planned], None],
    grey: bool = False,
) -> Found:
    import zipfile

    try:
        with cache.open_regular(path) as file, np.load(file, allow_pickle=False) as archive:
            names = list(archive.files)
            pairs = _npz_pairs(path, names, split, keys)
            headers = [_npz_member_header(path, archive, image_key) for image_key, _ in pairs]
            _plan_array(path, headers, shape, plan, mapped=False)
            parts = []
            for image_key, label_key in pairs:
                images = _as_images(archive[image_key], path, f"array '{image_key}'", shape)
                labels = None
                if label_key is not None:
                    _npz_member_header(path, archive, label_key)
                    labels = archive[label_key]
                parts.append((image_key, images, label_key, labels))
    except DatasetError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError) as error:  # no zip directory, data cut short
        raise DatasetError(f"{path} is cut off or damaged ({error}): copy or save it again") from error
    except Exception as error:
        raise DatasetError(f"{path} is not a NumPy .npz file that can be read ({error})") from error
    label_parts, class_names = [], None
    for image_key, images, label_key, labels in parts:
        if labels is None:
            continue
        if labels.ndim == 2 and 1 in labels.shape:  # a column or row vector (what loadmat gives)
            labels = labels.reshape(-1)
        if labels.ndim != 1 or len(labels) != len(images):
            counted = f"{labels.shape[0]:,} labels" if labels.ndim == 1 else f"labels of shape {labels.shape}"
            raise DatasetError(
                f"{path}: array '{label_key}' holds {counted} for the "
                f"{len(images):,} images of '{image_key}': they must be one label per image"
            )
        label_parts.append(labels)
    if label_parts and len(label_parts) < len(parts):
        lacking = next(image_key for image_key, _, label_key, _ in parts if label_key is None)
        labelled = next(image_key for image_key, _, label_key, _ in parts if label_key is not None)
        raise DatasetError(
            f"{path}: array '{lacking}' has no labels ('y_{lacking[2:]}' is missing), unlike '{labelled}': "
            "add them, or use --split to read only the labelled part"
        )
    labels = None
    if label_parts:
        labels, class_names = _labels_from(np.concatenate(label_parts), path)
    if len({part[1].ndim for part in parts}) > 1:
        raise DatasetError(
            f"{path}: some arrays hold colour images and some grey ones: use --keys to pick one"
        )
    images = np.concatenate([part[1] for part in parts]) if len(parts) > 1 else parts[0][1]
    images, converted = _colour_or_grey(images, grey)
    used = " + ".join(f"'{key}'" for pair in pairs for key in pair if key)
    return Found(
        slug(path, "npz"), images, labels, class_names, f"{path}: {used}", converted_to_grey=converted
    )


def _colour_or_grey(images: np.ndarray, grey: bool) -> tuple[np.ndarray, bool]:
    """N x H x W x 3 stays colour unless grey is asked for (Pillow's luma formula) or its three
    channels are equal everywhere; returns the images and whether colour was turned grey."""
    if images.ndim != 4:
        return images, False
    from .images import to_grey

    same = all(
        np.array_equal(block[..., 0], block[..., 1]) and np.array_equal(block[..., 1], block[..., 2])
        for block in (images[start : start + 4096] for start in range(0, len(images), 4096))
    )
    if same:
        return np.ascontiguousarray(images[..., 0]), False
    if grey:
        return np.concatenate(
            [to_grey(images[start : start + 4096]) for start in range(0, len(images), 4096)]
        ), True
    return images, False


def _npz_member_header(path: Path, archive, key: str) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape of one array of an .npz, checked before numpy reads it (see npy_header)."""
    members = archive.zip.namelist()
    member = key if key in members else f"{key}.npy"
    with archive.zip.open(member) as file:
        dtype, array_shape, _ = npy_header(path, file, f" (array '{key}')")
    return dtype, array_shape


def _npz_pairs(path: Path, names: list[str], split: str, keys) -> list[tuple[str, str | None]]:
    """Which (images, labels) arrays of the archive to read: --keys, else the usual names."""
    listed = ", ".join(f"'{name}'" for name in names) or "nothing"
    if keys is not None:
        for key in keys:
            if key is not None and key not in names:
                raise DatasetError(f"{path} has no array '{key}' (it holds {listed}): check --keys")
        if split != "all":
            raise DatasetError(f"--split does not apply with --keys: {path} is read as the arrays named")
        return [keys]
    if "x_train" in names and "x_test" in names:  # the layout of keras' mnist.npz and its kin
        chosen = ["train", "test"] if split == "all" else [split]
        return [(f"x_{part}", f"y_{part}" if f"y_{part}" in names else None) for part in chosen]
    if split != "all":
        raise DatasetError(
            f"{path} has no x_train/x_test arrays for --split (it holds {listed}): leave --split out"
        )
    for image_key, label_key in NPZ_NAMES:
        if image_key in names:
            return [(image_key, label_key if label_key in names else None)]
    if len(names) == 1:
        return [(names[0], None)]
    raise DatasetError(
        f"{path} has no 'images' array (it holds {listed}): name them with --keys IMAGES[,LABELS]"
    )


def _labels_from(labels: np.ndarray, path: Path) -> tuple[np.ndarray, dict[int, str] | None]:
    """Labels as int64; text labels become 0..C-1 with their texts as class names."""
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64), None
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64), None
    if labels.dtype.kind in "US":
        texts, codes = np.unique(labels, return_inverse=True)
        return codes.astype(np.int64), {i: str(text) for i, text in enumerate(texts)}
    raise DatasetError(f"{path}: the labels are {labels.dtype} values: use whole numbers or text")


def _as_images(array: np.ndarray, path: Path, what: str, shape: tuple[int, int] | None) -> np.ndarray:
    """array as uint8 N x H x W without copying uint8 data: N x D rows are reshaped by `shape`
    (or as squares), a single grey channel is dropped, other values are converted if in range."""
    if array.ndim >= 2 and 0 in array.shape[1:]:
        raise DatasetError(f"{path}: {what} has shape {array.shape}: its images have no pixels")
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 4 and array.shape[3] == 3:
        if shape is not None and tuple(array.shape[1:3]) != tuple(shape):
            raise DatasetError(
                f"{path}: {what} holds images of {array.shape[1]}x{array.shape[2]}, not {shape[0]}x{shape[1]}: leave --shape out"
            )
        return _as_uint8(array, path, what)
    if array.ndim == 2:
        height, width = shape or _square(array.shape[1], path, what)
        if height * width != array.shape[1]:
            raise DatasetError(
                f"{path}: {what} has rows of {array.shape[1]:,} values, not {height}x{width}: check --shape"
            )
        array = array.reshape(len(array), height, width)
    elif array.ndim == 3 and shape is not None and tuple(array.shape[1:]) != tuple(shape):
        raise DatasetError(
            f"{path}: {what} holds images of {array.shape[1]}x{array.shape[2]}, not {shape[0]}x{shape[1]}: leave --shape out"
        )
    if array.ndim != 3:
        raise DatasetError(
            f"{path}: {what} has shape {array.shape}: expected N x H x W grey images, N x H x W x 3 colour "
            "ones (RGB), or N x D rows with --shape HxW"
        )
    return _as_uint8(array, path, what)


def _square(width: int, path: Path, what: str) -> tuple[int, int]:
    side = math.isqrt(width)
    if side * side != width:
        raise DatasetError(
            f"{path}: {what} has rows of {width:,} values, not a square image: give --shape HxW"
        )
    return side, side


def _as_uint8(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    """uint8 as it is (a memory map stays one); other numbers 0..255 (floats 0..1 scaled) converted."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: {what} holds {array.dtype} values: expected numbers 0..255")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high > 255:
        raise DatasetError(
            f"{path}: {what} holds values from {low:g} to {high:g}: pixels must be 0..255 (or floats 0..1)"
        )
    if array.dtype.kind == "f":
        scaled = np.rint(array * 255 if high <= 1 else array)
        return scaled.astype(np.uint8)
    return array.astype(np.uint8)


# --- a CSV file --------------------------------------------------------------------------------


def _read_csv(path: Path, shape: tuple[int, int] | None, cache_dir) -> Found:
    from .csvparse import parse_pixel_csv

    def layout(n_fields: int) -> bool:
        return _csv_layout(path, n_fields, shape)

    def parse() -> dict[str, np.ndarray]:
        pixels, labels = parse_pixel_csv(path, header=None, n_fields=None, label_max=255, layout=layout)
        height, width = shape or _square(pixels.shape[1], path, "the CSV file")
        arrays = {"images": pixels.reshape(-1, height, width)}
        if labels is not None:
            arrays["labels"] = labels
        return arrays

    def plausible(arrays: dict[str, np.ndarray]) -> bool:
        images, labels = arrays.get("images"), arrays.get("labels")
        return (
            images is not None
            and images.dtype == np.uint8
            and images.ndim == 3
            and (shape is None or images.shape[1:] == tuple(shape))
            and (labels is None or (labels.dtype == np.int64 and labels.shape == images.shape[:1]))
        )

    try:
        arrays = cache.cached(path, f"csv-{shape}", parse, plausible, cache_dir)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    return Found(slug(path, "csv"), arrays["images"], arrays.get("labels"), None, f"{path}")


def _csv_layout(path: Path, n_fields: int, shape: tuple[int, int] | None) -> bool:
    """Whether the rows start with a label: yes when the other fields make the image (a square, or
    --shape), no when all of them do; anything else is refused before the rest of the file is read."""
    if shape is not None:
        pixels = shape[0] * shape[1]
        if n_fields in (pixels + 1, pixels):
            return n_fields == pixels + 1
        raise DatasetError(
            f"{path}: rows have {n_fields:,} fields, but --shape {shape[0]}x{shape[1]} wants {pixels:,} pixels "
            "(after an optional label): check --shape"
        )
    for with_label in (True, False):
        side = math.isqrt(n_fields - with_label)
        if n_fields - with_label > 0 and side * side == n_fields - with_label:
            return with_label
    raise DatasetError(
        f"{path}: rows have {n_fields:,} fields: a label and {n_fields - 1:,} pixels, which is not a square "
        "image: give --shape HxW"
    )
