"""Load MNIST, Fashion-MNIST (Kaggle CSV files), the USPS digit sheets, or your own files as one `Dataset`.

    data = load_dataset("mnist", split="train", limit=5000)
    data = load_dataset("files", data_dir="my-images/")   # own files: see sources.py
    data.all_pixel      # N x (H*W) uint8, a view of data.images

MNIST and Fashion-MNIST come from Kaggle through kagglehub, pinned to one version each (see
`KAGGLE`), or from a folder holding the same CSV files. Parsed CSV files are cached (cache.py)
so that a second load takes a fraction of a second. The USPS sheets ship inside the package.
Every problem with the user's data or options raises `DatasetError`, whose message is one line
meant for the user.

Only numpy is imported up front: kagglehub and Pillow are imported when they are needed, so the
command line starts fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import cache
from .errors import DATASETS, SPLITS, DatasetError, require_file
from .images import pillow_warnings_off

if TYPE_CHECKING:
    from .sources import Planned


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class KaggleSource:
    """Where one Kaggle dataset lives, what its CSV files look like, and what they hold."""

    title: str
    handle: str
    files: dict[str, str]  # split -> CSV file name
    header: str
    class_names: dict[int, str]
    # what the pinned version's files hold, per split (checked on what kagglehub downloaded):
    label_counts: dict[str, tuple[int, ...]]  # images of each label 0..9
    pixel_sums: dict[str, int]  # the sum of every pixel of every image: a checksum of the content


# The pinned Kaggle versions: the only place that names them. The counts and sums are those of
# the original IDX archives, which the pinned CSV files hold row for row (in any order).
KAGGLE = {
    "mnist": KaggleSource(
        title="MNIST",
        handle="oddrationale/mnist-in-csv/versions/2",
        files={"train": "mnist_train.csv", "test": "mnist_test.csv"},
        header=",".join(["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)]),
        class_names={digit: str(digit) for digit in range(10)},
        label_counts={
            "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
            "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        },
        pixel_sums={"train": 1_567_298_545, "test": 264_923_200},
    ),
    "fashion": KaggleSource(
        title="Fashion-MNIST",
        handle="zalando-research/fashionmnist/versions/4",
        files={"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"},
        header=",".join(["label"] + [f"pixel{i}" for i in range(1, 785)]),
        class_names=dict(enumerate(FASHION_CLASSES)),
        label_counts={"train": (6000,) * 10, "test": (1000,) * 10},
        pixel_sums={"train": 3_431_114_169, "test": 573_469_082},
    ),
}

CSV_SIDE = 28
CSV_FIELDS = 1 + CSV_SIDE * CSV_SIDE  # label, then the pixels row by row

USPS_DIGITS = (1, 2, 3, 4, 5)
USPS_TILE = 16
USPS_PACKAGED = Path(__file__).parent / "usps"  # shipped with the package (MIT, see LICENSE there)
USPS_FILES = "usps_1.jpg ... usps_5.jpg"

HASH_BLOCK_ROWS = 1 << 14  # rows read at a time while hashing for --limit or looking for blank rows


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Images with their labels, and where they came from.

    eq=False: datasets compare (and hash) by identity, as comparing arrays has no single truth.
    """

    name: str  # a short slug: the dataset's name, or the stem of your folder or file
    # uint8, C-contiguous (a memory map for a .npy source): N x H x W grey, N x H x W x 3 colour
    images: np.ndarray
    labels: np.ndarray | None  # int64 (N,), or None if unknown
    class_names: dict[int, str] | None  # label value -> name
    source: str  # where the data came from, for people
    n_blank_skipped: int  # all-black images dropped
    n_unreadable_skipped: int = 0  # files that were not readable images, skipped on request
    # for images read from files: each one's path relative to data_dir (str, "/" between
    # folders), an object array aligned with images; None for named datasets and single files
    paths: np.ndarray | None = None
    paths_root: Path | None = None  # the absolute folder the paths are relative to
    converted_to_grey: bool = False  # colour images turned grey on request (grey=True)
    n_not_images_skipped: int = 0  # files of a folder that are not images (notes.txt), skipped
    resize: str | None = None  # how images of another size were fitted (size given), else None

    @property
    def all_pixel(self) -> np.ndarray:
        """The images as rows of N x D pixels (D = H*W, or 3*H*W in colour, RGB per pixel): a
        view, not a copy."""
        return self.images.reshape(len(self.images), -1)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width), in grey and in colour alike (see channels)."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def channels(self) -> int:
        """1 for grey images, 3 for colour (RGB) ones."""
        return int(self.images.shape[3]) if self.images.ndim == 4 else 1

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:  # never the arrays: they may hold millions of images
        height, width = self.image_shape
        if self.labels is None:
            labels = "no labels"
        else:
            labels = f"labels ({len(self.class_names)} classes)" if self.class_names else "labels"
        skipped = f", {self.n_blank_skipped:,} all-black skipped" if self.n_blank_skipped else ""
        if self.n_unreadable_skipped:
            skipped += f", {self.n_unreadable_skipped:,} unreadable skipped"
        colour = ", colour" if self.channels == 3 else ""
        return (
            f"Dataset({self.name!r}: {len(self):,} images of {height}x{width}{colour} {self.images.dtype}, "
            f"{labels}{skipped}, from {self.source!r})"
        )


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "all",
    limit: int | None = None,
    keep_blank: bool = False,
    cache_dir: str | Path | None = None,
    size: tuple[int, int] | None = None,
    shape: tuple[int, int] | None = None,
    keys: tuple[str, str | None] | None = None,
    skip_unreadable: bool = False,
    grey: bool = False,
    resize: str = "stretch",
    plan: Callable[[Planned], None] | None = None,
) -> Dataset:
    """Load one of `DATASETS`: parse (or read the cache), split, drop all-black images, limit.

    mnist, fashion: with data_dir=None the pinned Kaggle version is fetched with kagglehub (it
    keeps its own download cache; KAGGLEHUB_CACHE moves it) and checked against the known row
    counts and checksums; with data_dir the CSV files are read from that folder. split is
    "train", "test" or "all" (train rows, then test rows). Parsed files are cached in cache_dir,
    else $KMEANS_MNIST_CACHE, else the user's cache folder (see cache.cache_folder).

    usps: the five sheets usps_1.jpg ... usps_5.jpg in data_dir (default: the copy shipped with
    the package), see `_read_usps_sheets`. They have no train/test split.

    files: your own images at data_dir (a folder of images, IDX files, .npy/.npz, a CSV file),
    see sources.py; size (height, width) resizes images of a folder, shape (height, width)
    reads flat rows, keys (images, labels) picks the arrays of an .npz, skip_unreadable skips
    (and counts) unreadable image files instead of refusing them; plan(Planned) is called with
    what the reading will hold in memory, from the files' headers, before the images are read,
    and may raise to refuse it (the command line refuses what cannot fit). resize says how
    images of another size are fitted to size: "stretch", "pad" or "crop" (see images.py).
    Colour images (a folder, or an .npy/.npz N x H x W x 3) stay colour (images N x H x W x 3)
    unless grey; images from a folder keep their paths (relative to data_dir) in Dataset.paths.

    keep_blank=False drops the images whose pixels are all exactly 0 (n_blank_skipped counts them).

    limit=N keeps a reproducible subset that does not depend on the row order of the files: the
    N images whose hashlib.blake2b digest of (label byte + pixel bytes) is smallest, in the order
    of those digests (pixel bytes alone for images without labels).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if limit is not None and (not _is_whole(limit) or limit < 1):
        raise DatasetError(f"limit must be a whole number of images, at least 1, got {limit!r}")
    for option, value in (("size", size), ("shape", shape)):
        if value is not None and not (
            isinstance(value, tuple | list)
            and len(value) == 2
            and all(_is_whole(side) and side >= 1 for side in value)
        ):
            raise DatasetError(
                f"{option} must be (height, width) in pixels, two whole numbers of at least 1, got {value!r}"
            )
    size = None if size is None else (int(size[0]), int(size[1]))
    shape = None if shape is None else (int(shape[0]), int(shape[1]))
    if resize not in ("stretch", "pad", "crop"):  # images.RESIZE_MODES (not imported: it needs no Pillow)
        raise DatasetError(f"unknown resize {resize!r}: choose one of stretch, pad, crop")
    if name != "files":
        for option, value in (
            ("size", size),
            ("shape", shape),
            ("keys", keys),
            ("skip_unreadable", skip_unreadable),
            ("grey", grey),
        ):
            if value:
                raise DatasetError(
                    f"{option} applies only to your own files (dataset 'files'), not to {name}"
                )

    n_unreadable = n_not_images = 0
    paths = paths_root = None
    converted = False
    if name == "files":
        from .sources import read_source

        if data_dir is None:
            raise DatasetError("dataset 'files' needs data_dir: the folder or file holding your images")
        found = read_source(
            Path(data_dir),
            split=split,
            size=size,
            shape=shape,
            keys=keys,
            skip_unreadable=skip_unreadable,
            cache_dir=cache_dir,
            grey=grey,
            resize=resize,
            plan=plan,
        )
        images, labels, class_names, source = found.images, found.labels, found.class_names, found.source
        name, n_unreadable, n_not_images = found.name, found.n_unreadable, found.n_not_images
        paths, converted, paths_root = found.paths, found.converted_to_grey, found.root
        # other images, other experiment folder: the grey or padded/cropped version of a folder
        # is not mixed with its colour or stretched results (see experiment_name)
        name += "-grey" if converted else ""
        name += f"-{resize}" if size is not None and resize != "stretch" else ""
    elif name == "usps":
        if split != "all":
            raise DatasetError(f"usps has no train/test split: use split 'all', not {split!r}")
        images, labels, source = _read_usps_sheets(USPS_PACKAGED if data_dir is None else Path(data_dir))
        class_names = {digit: str(digit) for digit in USPS_DIGITS}
    else:
        images, labels, source = _load_kaggle(KAGGLE[name], data_dir, split, cache_dir)
        class_names = dict(KAGGLE[name].class_names)

    n_blank = 0
    if not keep_blank:
        blank = _blank_rows(images)
        n_blank = int(np.count_nonzero(blank))
        if n_blank:  # a copy; with nothing blank a memory-mapped source stays mapped
            images = images[~blank]
            labels = None if labels is None else labels[~blank]
            paths = None if paths is None else paths[~blank]
    if limit is not None and limit < len(images):
        keep = _smallest_digests(images, labels, int(limit))
        images = images[keep]
        labels = None if labels is None else labels[keep]
        paths = None if paths is None else paths[keep]

    return Dataset(
        name=name,
        images=images if images.flags.c_contiguous else np.ascontiguousarray(images),
        labels=labels,
        class_names=class_names,
        source=source,
        n_blank_skipped=n_blank,
        n_unreadable_skipped=n_unreadable,
        paths=paths,
        paths_root=paths_root,
        converted_to_grey=converted,
        n_not_images_skipped=n_not_images,
        resize=resize if size is not None else None,
    )


def _is_whole(value: object) -> bool:
    """An int or a NumPy integer, not a bool (True is no number of images) and not a float."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _blank_rows(images: np.ndarray) -> np.ndarray:
    """A boolean mask of the all-black images, read block by block (no copy of a memory map)."""
    flat = images.reshape(len(images), -1)
    blank = np.empty(len(images), dtype=bool)
    for start in range(0, len(images), HASH_BLOCK_ROWS):
        np.equal(
            flat[start : start + HASH_BLOCK_ROWS].max(axis=1, initial=0),
            0,
            out=blank[start : start + HASH_BLOCK_ROWS],
        )
    return blank


def _smallest_digests(images: np.ndarray, labels: np.ndarray | None, count: int) -> np.ndarray:
    """Indices of the `count` rows whose blake2b(label byte + pixel bytes) is smallest, in that order.

    Only the first 8 bytes of each digest are kept for all rows (8 bytes a row, so 8 million
    images cost 64 MB, not a Python object each); rows whose prefixes tie at the boundary are
    ordered by their full digests, so the result is exactly that of sorting the full digests.
    """
    flat = images.reshape(len(images), -1)
    label_bytes = None if labels is None else labels.astype(np.uint8).tobytes()

    def digest(index: int, row) -> bytes:
        hasher = hashlib.blake2b() if label_bytes is None else hashlib.blake2b(label_bytes[index : index + 1])
        hasher.update(row)
        return hasher.digest()

    prefixes = np.empty(len(flat), dtype=">u8")
    for start in range(0, len(flat), HASH_BLOCK_ROWS):
        block = np.ascontiguousarray(flat[start : start + HASH_BLOCK_ROWS])
        prefixes[start : start + len(block)] = np.frombuffer(
            b"".join(digest(start + i, row)[:8] for i, row in enumerate(block)), dtype=">u8"
        )
    threshold = np.partition(prefixes, count - 1)[count - 1]
    candidates = np.flatnonzero(prefixes <= threshold)
    candidates = candidates[np.argsort(prefixes[candidates], kind="stable")]
    if len(np.unique(prefixes[candidates])) < len(candidates):  # equal prefixes: the full digests decide
        full = {int(index): digest(int(index), np.ascontiguousarray(flat[index])) for index in candidates}
        candidates = np.array(sorted(full, key=full.__getitem__), dtype=np.intp)
    return candidates[:count].astype(np.intp)


# --- files that exist but are not regular files --------------------------------------------


# --- Kaggle CSV files ------------------------------------------------------------------------


def _load_kaggle(
    spec: KaggleSource, data_dir: str | Path | None, split: str, cache_dir: str | Path | None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Find the CSV files of `split` (downloading with kagglehub when no folder is given) and read them."""
    wanted = " and ".join(spec.files.values())
    if data_dir is None:
        folder = _kagglehub_download(spec, wanted, cache.cache_folder(cache_dir))
        where = f"kagglehub {spec.handle} ({folder})"
        missing_hint = (
            f"the kagglehub copy looks incomplete: delete {folder} to download it again, or use --data-dir"
        )
    else:
        folder = Path(data_dir)
        _check_folder(folder, wanted, "or drop --data-dir to download them with kagglehub")
        where = str(folder)
        missing_hint = (
            "drop --data-dir to download it with kagglehub, "
            f"or set KAGGLEHUB_CACHE to a kagglehub cache holding {spec.handle}"
        )

    splits = list(spec.files) if split == "all" else [split]
    for part in splits:
        file_name = spec.files[part]
        if os.path.lexists(folder / file_name):
            continue
        other = _other_dataset_in(folder, spec)
        if other:
            raise DatasetError(
                f"{file_name} not found in {folder}, which looks like {KAGGLE[other].title}: "
                f"did you mean --dataset {other}?"
            )
        present = [name for name, other_file in spec.files.items() if (folder / other_file).is_file()]
        if data_dir is not None and len(splits) > 1 and present:  # the other split alone is there
            missing_hint = (
                f"use --split {present[0]} to read only {spec.files[present[0]]}, or {missing_hint}"
            )
        raise DatasetError(f"{file_name} not found in {folder}: {missing_hint}")

    download = (spec, folder) if data_dir is None else None
    parts = [_read_csv_cached(folder / spec.files[part], spec, part, download, cache_dir) for part in splits]
    images = np.concatenate([images for images, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([labels for _, labels in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels, f"{where}: {' + '.join(spec.files[part] for part in splits)}"


def _kagglehub_download(spec: KaggleSource, wanted: str, cache_folder: Path) -> Path:
    """The folder of the pinned version, from kagglehub's cache or downloaded (imported only here).

    Importing kagglehub alone takes about 0.25 s, so the folder it returned is remembered (per
    handle and KAGGLEHUB_CACHE) and reused while its files are there: a pinned version never
    changes, and shell loops over K start faster. What the files hold is checked on every
    parse (`_check_download`), so a remembered folder whose download was cut short is caught.
    """
    memo = (
        cache_folder
        / f"kagglehub-{cache.short_digest(spec.handle + '|' + os.environ.get('KAGGLEHUB_CACHE', ''))}.txt"
    )
    remembered = cache.read_small_text(memo)
    if remembered:
        folder = Path(remembered.strip())
        if folder.is_absolute() and all((folder / name).is_file() for name in spec.files.values()):
            return folder
    try:
        import kagglehub

        folder = Path(kagglehub.dataset_download(spec.handle)).resolve()
    except Exception as error:
        reason = f"{type(error).__name__}: {str(error).strip()}".splitlines()[0]
        if len(reason) > 160:
            reason = reason[:157] + "..."
        raise DatasetError(
            f"kagglehub download of {spec.handle} failed ({reason}); to work offline use "
            f"--data-dir DIR with {wanted}, or set KAGGLEHUB_CACHE to a kagglehub cache that holds the dataset"
        ) from error
    with contextlib.suppress(OSError):
        cache_folder.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(memo) or memo.is_file():  # never write into a pipe or a folder
            memo.write_text(f"{folder}\n", encoding="utf-8")
    return folder


def _check_download(
    spec: KaggleSource, split: str, folder: Path, images: np.ndarray, labels: np.ndarray
) -> None:
    """Refuse what kagglehub left if it is not the pinned version's content (a download cut short)."""
    expected = spec.label_counts[split]
    counts = tuple(np.bincount(labels, minlength=len(expected)).tolist())
    if counts == expected and int(images.sum(dtype=np.uint64)) == spec.pixel_sums[split]:
        return
    found = f"holds {len(labels):,} images, expected {sum(expected):,}"
    if len(labels) == sum(expected):
        found = "does not hold the pinned version's images (its checksum differs)"
    raise DatasetError(
        f"the kagglehub download of {spec.handle} is incomplete: {spec.files[split]} {found}; "
        f"delete {folder} and run again to download it anew (or use --data-dir with complete files)"
    )


def _other_dataset_in(folder: Path, spec: KaggleSource) -> str | None:
    """The name of the other Kaggle dataset whose CSV files are in `folder`, if any."""
    for name, other in KAGGLE.items():
        if other is not spec and any((folder / file_name).is_file() for file_name in other.files.values()):
            return name
    return None


def _check_folder(folder: Path, contents: str, how: str) -> None:
    """Raise DatasetError unless `folder` is a folder with something in it."""
    if not folder.exists():
        raise DatasetError(
            f"data folder {folder} does not exist: --data-dir wants the folder holding {contents}"
        )
    if not folder.is_dir():
        kind = cache.not_regular(folder.stat().st_mode) or "a file"
        raise DatasetError(
            f"{folder} is {kind}, not a folder: --data-dir wants the folder holding {contents}"
        )
    if not any(folder.iterdir()):
        raise DatasetError(f"data folder {folder} is empty: put {contents} there, {how}")


def _read_csv_cached(
    path: Path,
    spec: KaggleSource,
    split: str,
    download: tuple[KaggleSource, Path] | None,
    cache_dir: str | Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """`_parse_csv` through the parsed-data cache (cache.py); a kagglehub download is checked too.

    A cache entry is served only with labels 0..9 and, for a download, the known label counts.
    """
    require_file(path, f"{path.name} not found in {path.parent}")

    def parse() -> dict[str, np.ndarray]:
        if download is None:
            images, labels = _parse_csv(path, spec)
            return {"images": images, "labels": labels}
        try:
            images, labels = _parse_csv(path, spec)
        except DatasetError as error:  # a pinned version parses: a file that does not was cut short
            raise DatasetError(
                f"the kagglehub download of {spec.handle} is incomplete or damaged ({error}); "
                f"delete {download[1]} and run again to download it anew (or use --data-dir with complete files)"
            ) from error
        _check_download(spec, split, download[1], images, labels)
        return {"images": images, "labels": labels}

    def plausible(arrays: dict[str, np.ndarray]) -> bool:
        images, labels = arrays.get("images"), arrays.get("labels")
        if images is None or labels is None or images.dtype != np.uint8 or labels.dtype != np.int64:
            return False
        if images.shape[1:] != (CSV_SIDE, CSV_SIDE) or labels.shape != images.shape[:1] or not len(labels):
            return False
        if labels.min() < 0 or labels.max() > 9:
            return False
        if download is not None:
            return tuple(np.bincount(labels, minlength=10).tolist()) == spec.label_counts[split]
        return True

    try:
        arrays = cache.cached(path, f"kaggle-{spec.title}", parse, plausible, cache_dir)
    except OSError as error:  # the source vanished or turned into something else meanwhile
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    return arrays["images"], arrays["labels"]


def _parse_csv(path: Path, spec: KaggleSource) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Kaggle MNIST-style CSV file into (images uint8 N x 28 x 28, labels int64 N).

    Strict: the header must be exactly `spec.header`, and every row 785 fields of 1 to 3 decimal
    digits, the label 0..9 and the pixels 0..255; anything else raises DatasetError naming the
    file and the first bad line (see csvparse.py).
    """
    from .csvparse import parse_pixel_csv

    pixels, labels = parse_pixel_csv(
        path,
        header=lambda line: _check_header(path, line, spec),
        n_fields=CSV_FIELDS,
        label_max=9,
        what=f"the {spec.title} CSV header and rows",
    )
    return pixels.reshape(-1, CSV_SIDE, CSV_SIDE), labels


def _check_header(path: Path, header: bytes, spec: KaggleSource) -> None:
    if header == spec.header.encode():
        return
    from .csvparse import printable

    found = printable(header[:40].decode("utf-8", "replace")) + ("..." if len(header) > 40 else "")
    hint = ""
    for name, other in KAGGLE.items():
        if header == other.header.encode():
            hint = f"; that is the {other.title} header: did you mean --dataset {name}?"
    if any(header.startswith(other.header.encode() + b"\r") for other in KAGGLE.values()):
        hint = "; its lines end with a lone CR (old Mac style): convert them to LF or CRLF"
    elif header.startswith((b"\xff\xfe", b"\xfe\xff")):
        hint = "; it looks like UTF-16 text: save it as ASCII or UTF-8"
    names = spec.header.split(",")
    expected = f"{','.join(names[:3])},...,{names[-1]}"
    raise DatasetError(
        f"{path} line 1: header is not the {spec.title} CSV header '{expected}' (found '{found}'){hint}"
    )


# --- USPS sheets -------------------------------------------------------------------------------


def _read_usps_sheets(folder: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Cut the sheets usps_1.jpg ... usps_5.jpg in `folder` into 16x16 tiles labelled with the sheet's digit.

    Tiles are taken column by column (down the first column, then the next), as the original
    project did. A sheet in colour (or in any mode but 8-bit grey) is converted to grey with
    Pillow's convert("L"), not rejected. Returns (images uint8 N x 16 x 16, labels int64, source).
    """
    _check_folder(folder, USPS_FILES, "or point --data-dir at the folder holding them")
    paths = [folder / f"usps_{digit}.jpg" for digit in USPS_DIGITS]
    for path in paths:
        require_file(
            path, f"{path.name} not found in {folder}: use --data-dir with the folder holding {USPS_FILES}"
        )
    tiles, labels = [], []
    for digit, path in zip(USPS_DIGITS, paths, strict=True):
        with pillow_warnings_off():
            sheet = read_grey_image(path)
        height, width = sheet.shape
        if height % USPS_TILE or width % USPS_TILE:
            raise DatasetError(
                f"{path} is {height}x{width} px (HxW), not a grid of {USPS_TILE}x{USPS_TILE} tiles"
            )
        grid = sheet.reshape(height // USPS_TILE, USPS_TILE, width // USPS_TILE, USPS_TILE)
        column_major = grid.transpose(2, 0, 1, 3).reshape(-1, USPS_TILE, USPS_TILE)
        tiles.append(column_major)
        labels.append(np.full(len(column_major), digit, dtype=np.int64))
    where = "the sheets shipped with kmeans-mnist" if folder == USPS_PACKAGED else str(folder)
    return np.concatenate(tiles), np.concatenate(labels), f"{where}: {USPS_FILES}"


def read_grey_image(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """One image file as a 2-D uint8 array of grey levels, resized (stretched) to size (height,
    width) if given: images.read_image with grey=True (every mode by its real range). Every
    failure is a DatasetError naming the file. Call it inside `pillow_warnings_off`."""
    from .images import read_image

    return read_image(path, size, grey=True)
