"""Load MNIST, Fashion-MNIST (Kaggle CSV files) or the USPS digit sheets (JPEG) as one `Dataset`.

    data = load_dataset("mnist", split="train", limit=5000)
    data.all_pixel      # N x 784 uint8, a view of data.images

MNIST and Fashion-MNIST come from Kaggle through kagglehub, pinned to one version each (see
`KAGGLE`), or from a folder holding the same CSV files. Parsed CSV files are cached as .npy
files so that a second load takes a fraction of a second. Every problem with the user's data or
options raises `DatasetError`, whose message is one line meant for the user.

Only numpy is imported up front: kagglehub and Pillow are imported when they are needed, so the
command line starts fast.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

DATASETS = ("mnist", "fashion", "usps")
SPLITS = ("train", "test", "all")

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
    """Where one Kaggle dataset lives and what its CSV files look like."""

    title: str
    handle: str
    files: dict[str, str]  # split -> CSV file name
    header: str
    class_names: dict[int, str]


# The pinned Kaggle versions: the only place that names them.
KAGGLE = {
    "mnist": KaggleSource(
        title="MNIST",
        handle="oddrationale/mnist-in-csv/versions/2",
        files={"train": "mnist_train.csv", "test": "mnist_test.csv"},
        header=",".join(["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)]),
        class_names={digit: str(digit) for digit in range(10)},
    ),
    "fashion": KaggleSource(
        title="Fashion-MNIST",
        handle="zalando-research/fashionmnist/versions/4",
        files={"train": "fashion-mnist_train.csv", "test": "fashion-mnist_test.csv"},
        header=",".join(["label"] + [f"pixel{i}" for i in range(1, 785)]),
        class_names=dict(enumerate(FASHION_CLASSES)),
    ),
}

CSV_SIDE = 28
CSV_FIELDS = 1 + CSV_SIDE * CSV_SIDE  # label, then the pixels row by row

USPS_DIGITS = (1, 2, 3, 4, 5)
USPS_TILE = 16
USPS_DEFAULT_DIR = Path("dataset/usps")
USPS_FILES = "usps_1.jpg ... usps_5.jpg"

CACHE_ENV = "KMEANS_MNIST_CACHE"
DEFAULT_CACHE_DIR = Path("dataset/.cache")
CACHE_VERSION = 1  # bump when the cached arrays change meaning

CHUNK_BYTES = 1 << 20  # CSV text parsed per step: small enough to stay in the CPU cache


class DatasetError(ValueError):
    """A problem with the user's data or data options; str() is one line meant for the user."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with their labels, and where they came from.

    eq=False: datasets compare (and hash) by identity, as comparing arrays has no single truth.
    """

    name: str
    images: np.ndarray  # uint8, N x H x W, C-contiguous
    labels: np.ndarray | None  # int64 (N,), or None if unknown
    class_names: dict[int, str] | None  # label value -> name
    source: str  # where the data came from, for people
    n_blank_skipped: int  # all-black images dropped

    @property
    def all_pixel(self) -> np.ndarray:
        """The images as rows of N x (H*W) pixels: a view, not a copy."""
        return self.images.reshape(len(self.images), -1)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "all",
    limit: int | None = None,
    keep_blank: bool = False,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load one of `DATASETS`: parse (or read the cache), split, drop all-black images, limit.

    mnist, fashion: with data_dir=None the pinned Kaggle version is fetched with kagglehub (it
    keeps its own download cache; KAGGLEHUB_CACHE moves it); with data_dir the CSV files are
    read from that folder. split is "train", "test" or "all" (train rows, then test rows).
    Parsed files are cached in cache_dir, else $KMEANS_MNIST_CACHE, else dataset/.cache.

    usps: the five sheets usps_1.jpg ... usps_5.jpg in data_dir (default dataset/usps), see
    `_read_usps_sheets`. They have no train/test split.

    keep_blank=False drops the images whose pixels are all exactly 0 (n_blank_skipped counts them).

    limit=N keeps a reproducible subset that does not depend on the row order of the files: the
    N images whose hashlib.blake2b digest of (label byte + pixel bytes) is smallest, in the order
    of those digests.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be at least 1, got {limit}")

    if name == "usps":
        if split != "all":
            raise DatasetError(f"usps has no train/test split: use split 'all', not {split!r}")
        images, labels, source = _read_usps_sheets(USPS_DEFAULT_DIR if data_dir is None else Path(data_dir))
        class_names = {digit: str(digit) for digit in USPS_DIGITS}
    else:
        images, labels, source = _load_kaggle(KAGGLE[name], data_dir, split, _cache_folder(cache_dir))
        class_names = dict(KAGGLE[name].class_names)

    n_blank = 0
    if not keep_blank:
        blank = ~images.reshape(len(images), -1).any(axis=1)
        n_blank = int(blank.sum())
        if n_blank:
            images, labels = images[~blank], labels[~blank]
    if limit is not None and limit < len(images):
        keep = _smallest_digests(images, labels, limit)
        images, labels = images[keep], labels[keep]

    return Dataset(
        name=name,
        images=np.ascontiguousarray(images),
        labels=labels,
        class_names=class_names,
        source=source,
        n_blank_skipped=n_blank,
    )


def _smallest_digests(images: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` rows whose blake2b(label byte + pixel bytes) is smallest, in that order."""
    label_bytes = labels.astype(np.uint8).tobytes()
    digests = []
    for index, image in enumerate(np.ascontiguousarray(images)):
        digest = hashlib.blake2b(label_bytes[index : index + 1])
        digest.update(image)
        digests.append(digest.digest())
    return np.array(sorted(range(len(digests)), key=digests.__getitem__)[:count], dtype=np.intp)


# --- Kaggle CSV files ------------------------------------------------------------------------


def _load_kaggle(
    spec: KaggleSource, data_dir: str | Path | None, split: str, cache_folder: Path
) -> tuple[np.ndarray, np.ndarray, str]:
    """Find the CSV files of `split` (downloading with kagglehub when no folder is given) and read them."""
    wanted = " and ".join(spec.files.values())
    if data_dir is None:
        folder = _kagglehub_download(spec, wanted, cache_folder)
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

    names = list(spec.files.values()) if split == "all" else [spec.files[split]]
    for file_name in names:
        if not (folder / file_name).is_file():
            other = _other_dataset_in(folder, spec)
            if other:
                raise DatasetError(
                    f"{file_name} not found in {folder}, which looks like {KAGGLE[other].title}: "
                    f"did you mean --dataset {other}?"
                )
            present = [split for split, name in spec.files.items() if (folder / name).is_file()]
            if data_dir is not None and len(names) > 1 and present:  # the other split alone is there
                missing_hint = (
                    f"use --split {present[0]} to read only {spec.files[present[0]]}, or {missing_hint}"
                )
            raise DatasetError(f"{file_name} not found in {folder}: {missing_hint}")

    parts = [_read_csv_cached(folder / file_name, spec, cache_folder) for file_name in names]
    images = np.concatenate([images for images, _ in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([labels for _, labels in parts]) if len(parts) > 1 else parts[0][1]
    return images, labels, f"{where}: {' + '.join(names)}"


def _kagglehub_download(spec: KaggleSource, wanted: str, cache_folder: Path) -> Path:
    """The folder of the pinned version, from kagglehub's cache or downloaded (imported only here).

    Importing kagglehub alone takes about 0.25 s, so the folder it returned is remembered (per
    handle and KAGGLEHUB_CACHE) and reused while its files are there: a pinned version never
    changes, and shell loops over K start faster.
    """
    memo = (
        cache_folder
        / f"kagglehub-{_short_digest(spec.handle + '|' + os.environ.get('KAGGLEHUB_CACHE', ''))}.txt"
    )
    with contextlib.suppress(OSError, UnicodeDecodeError):
        folder = Path(memo.read_text(encoding="utf-8").strip())
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
        memo.write_text(f"{folder}\n", encoding="utf-8")
    return folder


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
        raise DatasetError(
            f"{folder} is a file, not a folder: --data-dir wants the folder holding {contents}"
        )
    if not any(folder.iterdir()):
        raise DatasetError(f"data folder {folder} is empty: put {contents} there, {how}")


# --- Cache of parsed CSV files -----------------------------------------------------------------


def _cache_folder(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _short_digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _read_csv_cached(path: Path, spec: KaggleSource, cache_folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """`_parse_csv`, through a cache of .npy files in `cache_folder`.

    An entry's name carries a digest of the source's absolute path and one of its size and
    st_mtime_ns, so any change to the file makes a new entry (the old ones are removed). Entries
    are written under a temporary name and renamed, so no reader ever sees half a file; a cache
    that cannot be written is skipped, and an unreadable entry is parsed again.
    """
    try:
        state = path.stat()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror}") from error
    source_key = f"{path.name}-{_short_digest(str(path.resolve()))}"
    entry = (
        cache_folder / f"{source_key}-{_short_digest(f'{state.st_size}:{state.st_mtime_ns}:{CACHE_VERSION}')}"
    )

    cached = _read_cache_entry(entry)
    if cached is not None:
        return cached
    images, labels = _parse_csv(path, spec)
    with contextlib.suppress(OSError):
        cache_folder.mkdir(parents=True, exist_ok=True)
        _save_atomically(Path(f"{entry}.images.npy"), images)
        _save_atomically(Path(f"{entry}.labels.npy"), labels)
        for stale in cache_folder.glob(f"{source_key}-*.npy"):
            if not stale.name.startswith(entry.name):
                stale.unlink()
    return images, labels


def _read_cache_entry(entry: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The arrays of a cache entry, or None if it is missing, unreadable or not what it should be."""
    try:
        images = np.load(f"{entry}.images.npy", allow_pickle=False)
        labels = np.load(f"{entry}.labels.npy", allow_pickle=False)
    except Exception:  # whatever is wrong with an entry, parsing again mends it
        return None
    if (
        images.dtype != np.uint8
        or images.shape[1:] != (CSV_SIDE, CSV_SIDE)
        or labels.dtype != np.int64
        or labels.shape != images.shape[:1]
    ):
        return None
    return images, labels


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """np.save to a temporary file beside `path`, then rename it to `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, array, allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


# --- CSV parsing ---------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
_NEWLINE_NIBBLE = ord("\n") & 15
_AFTER_NEWLINE = 0x100  # table flag: the byte before the field is a newline
_BAD_FIELD = 0x200  # table flag: empty, more than 3 digits, or over 255


@functools.cache
def _field_table() -> np.ndarray:
    """Decode table for one field, indexed by the low nibbles of the 4 bytes before its terminator.

    In a file of digits, ',' and '\\n' only, a byte's low nibble tells which it is (0-9, 0xC,
    0xA). Key bits 0-3: byte p-4, 4-7: p-2, 8-11: p-3, 12-15: p-1 (the units digit), for the
    terminator at p. The entry holds the value in its low byte, and the two flags above.
    """
    key = np.arange(1 << 16)
    before, tens, hundreds, units = key & 15, (key >> 4) & 15, (key >> 8) & 15, key >> 12
    has_tens = tens < 10
    has_hundreds = has_tens & (hundreds < 10)
    value = units + has_tens * (10 * tens + has_hundreds * 100 * hundreds)
    lead = np.where(~has_tens, tens, np.where(~has_hundreds, hundreds, before))  # the byte before the field
    bad = (units >= 10) | (has_hundreds & (before < 10)) | (value > 255)
    entry = np.where(bad, _BAD_FIELD, value) | np.where(lead == _NEWLINE_NIBBLE, _AFTER_NEWLINE, 0)
    return entry.astype(np.uint16)


def _parse_csv(path: Path, spec: KaggleSource) -> tuple[np.ndarray, np.ndarray]:
    """Parse a Kaggle MNIST-style CSV file into (images uint8 N x 28 x 28, labels int64 N).

    Strict: the header must be exactly `spec.header`, and every row 785 fields of 1 to 3 decimal
    digits, the label 0..9 and the pixels 0..255; anything else raises DatasetError naming the
    file and the first bad line. LF or CRLF line endings, a UTF-8 BOM and a missing final
    newline are accepted. Fast: numpy works on the bytes of the file, 1 MiB of lines at a time.
    """
    try:
        text = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    start = len(_BOM) if text.startswith(_BOM) else 0
    if len(text) == start:
        raise DatasetError(f"{path} is empty: expected the {spec.title} CSV header and rows")
    if not text.endswith(b"\n"):
        text += b"\n"
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n")  # a CR left now is a stray one, refused below
    header_end = text.index(b"\n", start)
    _check_header(path, text[start:header_end], spec)
    if header_end + 1 == len(text):
        raise DatasetError(f"{path} has a header but no data rows")

    images, labels = [], []
    begin, first_line = header_end + 1, 2
    while begin < len(text):
        end = text.find(b"\n", begin + CHUNK_BYTES) + 1 or len(text)
        fields = _decode_lines(text, begin, end)
        if fields is None:
            _raise_first_bad_line(path, text[begin:end], first_line)
        images.append(fields[:, 1:].astype(np.uint8))
        labels.append(fields[:, 0].astype(np.int64))
        begin, first_line = end, first_line + len(fields)

    pixels = np.concatenate(images) if len(images) > 1 else images[0]
    return pixels.reshape(-1, CSV_SIDE, CSV_SIDE), np.concatenate(labels)


def _decode_lines(text: bytes, begin: int, end: int) -> np.ndarray | None:
    """The values of the whole data lines text[begin:end] as rows x 785 uint16, or None if any is bad.

    Every field ends at a ',' or '\\n' (the only bytes below '0' in a good file); the 4 bytes
    before each terminator, looked up in `_field_table`, give its value and check its form.
    text[begin - 1] must be a newline: the end of the header or of the previous line.
    """
    chunk = np.frombuffer(text, dtype=np.uint8, count=end - begin, offset=begin)
    rows = np.count_nonzero(chunk == ord("\n"))
    terminators = chunk < ord("0")
    n_commas = np.count_nonzero(chunk == ord(","))
    if np.count_nonzero(chunk > ord("9")) or np.count_nonzero(terminators) != rows + n_commas:
        return None  # a byte that is not a digit, ',' or '\n'
    # windows[i] = text[begin - 4 + i : begin + i] as a little-endian uint32: an overlapping view
    windows = np.ndarray(shape=(end - begin,), dtype="<u4", buffer=text, offset=begin - 4, strides=(1,))
    keys = windows[terminators]
    high = keys >> 12
    high &= 0xF0F0
    keys &= 0x0F0F
    keys |= high  # the low nibbles of the 4 bytes, in the order `_field_table` wants
    fields = _field_table()[keys]
    if len(fields) != rows * CSV_FIELDS:
        return None
    fields = fields.reshape(rows, CSV_FIELDS)
    flags = fields >> 8
    fields &= 0xFF
    # well formed, 785 fields a line (a newline before the first field of each line, and before no other)
    if (flags[:, 0] != 1).any() or flags[:, 1:].any() or (fields[:, 0] > 9).any():
        return None
    return fields


def _check_header(path: Path, header: bytes, spec: KaggleSource) -> None:
    if header == spec.header.encode():
        return
    found = _printable(header[:40].decode("utf-8", "replace")) + ("..." if len(header) > 40 else "")
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


def _printable(text: str) -> str:
    """text with control characters and line breaks escaped, so that a message stays on one line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _raise_first_bad_line(path: Path, lines: bytes, first_line: int) -> NoReturn:
    """Find the first bad line among `lines` (whole lines, numbered from first_line) and raise for it."""
    split_lines = lines[:-1].split(b"\n")
    for number, line in enumerate(split_lines, start=first_line):
        problem = _line_problem(line)
        if problem:
            raise DatasetError(f"{path} line {number}: {problem}")
    # not reached while the fast checks and these agree; kept so that a bad file never passes
    last_line = first_line + len(split_lines) - 1
    raise DatasetError(f"{path} lines {first_line}-{last_line}: malformed data")


def _line_problem(line: bytes) -> str | None:
    """What is wrong with one data line, or None."""
    if not line:
        return "empty line"
    if b"\r" in line:
        return "stray carriage return (CR) inside the line"
    fields = line.split(b",")
    if len(fields) != CSV_FIELDS:
        return f"{len(fields)} fields, expected {CSV_FIELDS}"
    for column, field in enumerate(fields, start=1):
        kind, top = ("label", 9) if column == 1 else ("value", 255)
        shown = field[:20].decode("utf-8", "replace")
        if not field:
            return f"field {column} is empty"
        if not field.isdigit():  # bytes: ASCII digits only
            return f"{shown!r} is not an unsigned integer (field {column})"
        if len(field) > 3 or int(field) > top:
            return f"{kind} {shown} out of range 0..{top} (field {column})"
    return None


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
        if not path.is_file():
            raise DatasetError(
                f"{path.name} not found in {folder}: use --data-dir with the folder holding {USPS_FILES}"
            )
    tiles, labels = [], []
    for digit, path in zip(USPS_DIGITS, paths, strict=True):
        sheet = _read_sheet(path)
        height, width = sheet.shape
        if height % USPS_TILE or width % USPS_TILE:
            raise DatasetError(f"{path} is {width}x{height} px, not a grid of {USPS_TILE}x{USPS_TILE} tiles")
        grid = sheet.reshape(height // USPS_TILE, USPS_TILE, width // USPS_TILE, USPS_TILE)
        column_major = grid.transpose(2, 0, 1, 3).reshape(-1, USPS_TILE, USPS_TILE)
        tiles.append(column_major)
        labels.append(np.full(len(column_major), digit, dtype=np.int64))
    return np.concatenate(tiles), np.concatenate(labels), f"{folder}: {USPS_FILES}"


def _read_sheet(path: Path) -> np.ndarray:
    """One sheet as a 2-D uint8 array of grey levels (Pillow imported only here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            grey = image if image.mode == "L" else image.convert("L")
            return np.array(grey, dtype=np.uint8)
    except UnidentifiedImageError as error:
        raise DatasetError(f"{path} is not an image that Pillow can read") from error
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
