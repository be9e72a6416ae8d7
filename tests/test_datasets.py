"""The loader on small generated files: Kaggle-format CSV files and USPS-style sheets."""

import dataclasses
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist.data import csvparse, datasets
from kmeans_mnist.data.datasets import DATASETS, Dataset, DatasetError, load_dataset

MNIST_HEADER = ",".join(["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)])
FASHION_HEADER = ",".join(["label"] + [f"pixel{i}" for i in range(1, 785)])
KAGGLE_FILES = {
    "mnist": ("mnist_train.csv", "mnist_test.csv", MNIST_HEADER),
    "fashion": ("fashion-mnist_train.csv", "fashion-mnist_test.csv", FASHION_HEADER),
}
N_TRAIN, N_TEST = 20, 8
SMALL_CHUNK = 3000  # about one and a half rows of the generated files


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Run in tmp_path, with the parsed-data cache there too: never write into the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def make_images(seed: int, count: int, blank: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Random 28x28 images, mostly zeros as in MNIST, and labels 0..9; the rows in `blank` all black."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[rng.random(images.shape) < 0.6] = 0
    images[list(blank)] = 0
    return images, rng.integers(0, 10, count).astype(np.int64)


def csv_lines(header: str, images: np.ndarray, labels: np.ndarray) -> list[str]:
    return [header] + [
        ",".join(map(str, [label, *image.ravel()])) for image, label in zip(images, labels, strict=True)
    ]


def csv_bytes(lines: list[str], newline: str = "\n", bom: bool = False, final_newline: bool = True) -> bytes:
    text = newline.join(lines) + (newline if final_newline else "")
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode()


def write_kaggle(folder: Path, name: str, train, test, **format_options) -> Path:
    """Write the two CSV files of dataset `name` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    train_name, test_name, header = KAGGLE_FILES[name]
    for file_name, (images, labels) in ((train_name, train), (test_name, test)):
        (folder / file_name).write_bytes(csv_bytes(csv_lines(header, images, labels), **format_options))
    return folder


@pytest.fixture
def train():
    return make_images(1, N_TRAIN, blank=(3, 11))


@pytest.fixture
def test():
    return make_images(2, N_TEST, blank=(5,))


@pytest.fixture
def mnist_dir(tmp_path, train, test):
    return write_kaggle(tmp_path / "mnist-csv", "mnist", train, test)


def both(train, test):
    return np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]])


def test_import_needs_neither_kagglehub_nor_pillow():
    code = "import sys, kmeans_mnist.data.datasets; print(sorted({'kagglehub', 'PIL', 'requests'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_reads_kaggle_csv_files(tmp_path, train, test, name):
    folder = write_kaggle(tmp_path / name, name, train, test)
    data = load_dataset(name, data_dir=folder, keep_blank=True)
    images, labels = both(train, test)
    assert isinstance(data, Dataset)
    assert data.name == name
    assert data.images.dtype == np.uint8 and data.images.flags.c_contiguous
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.image_shape == (28, 28)
    assert len(data) == N_TRAIN + N_TEST
    assert str(folder) in data.source and KAGGLE_FILES[name][0] in data.source
    assert data.n_blank_skipped == 0


def test_class_names():
    assert DATASETS == ("mnist", "fashion", "usps", "files")
    assert datasets.KAGGLE["mnist"].class_names == {i: str(i) for i in range(10)}
    assert datasets.KAGGLE["fashion"].class_names[0] == "T-shirt/top"
    assert datasets.KAGGLE["fashion"].class_names[9] == "Ankle boot"
    assert len(datasets.KAGGLE["fashion"].class_names) == 10


@pytest.mark.parametrize(
    "format_options",
    [
        {"newline": "\r\n"},
        {"bom": True},
        {"final_newline": False},
        {"newline": "\r\n", "bom": True, "final_newline": False},
    ],
    ids=["crlf", "bom", "no-final-newline", "all-three"],
)
def test_line_endings_bom_and_final_newline(tmp_path, train, test, format_options):
    folder = write_kaggle(tmp_path / "odd", "mnist", train, test, **format_options)
    data = load_dataset("mnist", data_dir=folder, keep_blank=True)
    images, labels = both(train, test)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)


@pytest.mark.parametrize("chunk_bytes", [csvparse.CHUNK_BYTES, SMALL_CHUNK])
def test_shuffled_rows_parse_row_by_row(tmp_path, monkeypatch, train, test, chunk_bytes):
    monkeypatch.setattr(csvparse, "CHUNK_BYTES", chunk_bytes)
    order = np.random.default_rng(7).permutation(N_TRAIN)
    shuffled = (train[0][order], train[1][order])
    folder = write_kaggle(tmp_path / "shuffled", "mnist", shuffled, test)
    data = load_dataset("mnist", data_dir=folder, split="train", keep_blank=True)
    np.testing.assert_array_equal(data.images, train[0][order])
    np.testing.assert_array_equal(data.labels, train[1][order])


def test_splits(mnist_dir, train, test):
    train_data = load_dataset("mnist", data_dir=mnist_dir, split="train", keep_blank=True)
    test_data = load_dataset("mnist", data_dir=mnist_dir, split="test", keep_blank=True)
    all_data = load_dataset("mnist", data_dir=mnist_dir, split="all", keep_blank=True)
    np.testing.assert_array_equal(train_data.images, train[0])
    np.testing.assert_array_equal(test_data.labels, test[1])
    assert len(all_data) == len(train_data) + len(test_data)
    np.testing.assert_array_equal(all_data.images, np.concatenate([train_data.images, test_data.images]))
    assert "mnist_train.csv" in train_data.source and "mnist_test.csv" not in train_data.source


def test_one_split_needs_only_its_file(tmp_path, train, test):
    folder = write_kaggle(tmp_path / "only-train", "mnist", train, test)
    (folder / "mnist_test.csv").unlink()
    assert len(load_dataset("mnist", data_dir=folder, split="train", keep_blank=True)) == N_TRAIN


def test_blank_images_are_dropped_unless_kept(mnist_dir, train, test):
    kept = load_dataset("mnist", data_dir=mnist_dir, keep_blank=True)
    dropped = load_dataset("mnist", data_dir=mnist_dir)
    assert kept.n_blank_skipped == 0 and len(kept) == N_TRAIN + N_TEST
    assert dropped.n_blank_skipped == 3 and len(dropped) == N_TRAIN + N_TEST - 3
    assert dropped.all_pixel.any(axis=1).all()
    non_blank = kept.all_pixel.any(axis=1)
    np.testing.assert_array_equal(dropped.images, kept.images[non_blank])
    np.testing.assert_array_equal(dropped.labels, kept.labels[non_blank])


def test_all_pixel_is_a_view(mnist_dir):
    data = load_dataset("mnist", data_dir=mnist_dir)
    assert data.all_pixel.shape == (len(data), 784)
    assert data.all_pixel.dtype == np.uint8
    assert np.shares_memory(data.all_pixel, data.images)
    np.testing.assert_array_equal(data.all_pixel[4], data.images[4].ravel())


def expected_subset(images: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The documented rule, computed independently: smallest blake2b(label byte + pixel bytes) first."""
    digests = [
        hashlib.blake2b(bytes([int(label)]) + image.tobytes()).digest()
        for image, label in zip(images, labels, strict=True)
    ]
    return np.array(sorted(range(len(digests)), key=digests.__getitem__)[:count])


def test_limit_keeps_the_smallest_digests_whatever_the_row_order(tmp_path, mnist_dir):
    full = load_dataset("mnist", data_dir=mnist_dir)
    first = load_dataset("mnist", data_dir=mnist_dir, limit=10)
    again = load_dataset("mnist", data_dir=mnist_dir, limit=10)
    assert len(first) == 10 and first.images.flags.c_contiguous
    np.testing.assert_array_equal(first.images, again.images)

    keep = expected_subset(full.images, full.labels, 10)
    np.testing.assert_array_equal(first.images, full.images[keep])
    np.testing.assert_array_equal(first.labels, full.labels[keep])

    order = np.random.default_rng(3).permutation(len(full))
    rows = (full.images[order], full.labels[order])
    shuffled = write_kaggle(tmp_path / "shuffled", "mnist", rows, make_images(9, 1))
    from_shuffled = load_dataset("mnist", data_dir=shuffled, split="train", limit=10)
    np.testing.assert_array_equal(from_shuffled.images, first.images)
    np.testing.assert_array_equal(from_shuffled.labels, first.labels)


@pytest.mark.parametrize("limit", [N_TRAIN + N_TEST - 3, 1000])
def test_limit_at_or_over_the_size_keeps_everything(mnist_dir, limit):
    full = load_dataset("mnist", data_dir=mnist_dir)
    limited = load_dataset("mnist", data_dir=mnist_dir, limit=limit)
    assert len(limited) == len(full)
    assert sorted(map(bytes, limited.all_pixel)) == sorted(map(bytes, full.all_pixel))


# --- USPS sheets ---------------------------------------------------------------------------


def tile_value(digit: int, row: int, col: int, rows: int = 2) -> int:
    """A distinct grey level per tile that grows column by column."""
    return 20 + 35 * (col * rows + row) + digit


def write_sheets(folder: Path, rows: int = 2, cols: int = 3, colour: bool = False) -> Path:
    """usps_1.jpg ... usps_5.jpg: rows x cols flat 16x16 tiles, the last tile all black."""
    folder.mkdir(parents=True, exist_ok=True)
    for digit in range(1, 6):
        sheet = np.zeros((rows * 16, cols * 16), dtype=np.uint8)
        for col in range(cols):
            for row in range(rows):
                sheet[row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] = tile_value(digit, row, col, rows)
        sheet[-16:, -16:] = 0
        image = Image.fromarray(np.stack([sheet] * 3, axis=-1) if colour else sheet)
        image.save(folder / f"usps_{digit}.jpg", quality=100, subsampling=0)
    return folder


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_usps_tiles_column_by_column(tmp_path, colour):
    folder = write_sheets(tmp_path / "sheets", colour=colour)
    assert Image.open(folder / "usps_1.jpg").mode == ("RGB" if colour else "L")
    data = load_dataset("usps", data_dir=folder)
    assert data.name == "usps" and data.image_shape == (16, 16) and len(data) == 25
    assert data.n_blank_skipped == 5
    assert data.class_names == {digit: str(digit) for digit in range(1, 6)}
    np.testing.assert_array_equal(data.labels, np.repeat(np.arange(1, 6), 5))
    expected = [tile_value(digit, row, col) for digit in range(1, 6) for col in range(3) for row in range(2)]
    expected = np.array(expected).reshape(5, 6)[:, :5].ravel()  # the last tile of each sheet is blank
    np.testing.assert_allclose(data.images.reshape(25, -1).mean(axis=1), expected, atol=2)
    assert data.images.flags.c_contiguous and np.shares_memory(data.all_pixel, data.images)


def test_usps_keep_blank(tmp_path):
    data = load_dataset("usps", data_dir=write_sheets(tmp_path / "sheets"), keep_blank=True)
    assert len(data) == 30 and data.n_blank_skipped == 0
    assert not data.images[5].any()
    assert str(tmp_path / "sheets") in data.source


def test_usps_sheets_ship_with_the_package(tmp_path):
    """No data_dir: the five sheets inside the package, whatever the current folder."""
    data = load_dataset("usps")
    assert len(data) == 5_500 and data.n_blank_skipped == 110 and data.image_shape == (16, 16)
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=6), [0] + [1_100] * 5)
    assert "shipped with kmeans-mnist" in data.source
    licence = (datasets.USPS_PACKAGED / "LICENSE").read_text()
    assert "MIT License" in licence and "Sayyed Hossein Hosseini Dolat Abadi" in licence


def test_usps_limit(tmp_path):
    folder = write_sheets(tmp_path / "sheets")
    full = load_dataset("usps", data_dir=folder)
    limited = load_dataset("usps", data_dir=folder, limit=7)
    keep = expected_subset(full.images, full.labels, 7)
    np.testing.assert_array_equal(limited.images, full.images[keep])


# --- Cache of parsed files -----------------------------------------------------------------------


def npy_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.npy"))


def test_second_load_reads_the_cache(tmp_path, monkeypatch, mnist_dir):
    first = load_dataset("mnist", data_dir=mnist_dir)
    cache = tmp_path / "parsed-cache"
    names = npy_files(cache)
    assert len(names) == 4 and any(name.startswith("mnist_train.csv-") for name in names)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again instead of reading the cache")

    monkeypatch.setattr(datasets, "_parse_csv", no_parsing)
    monkeypatch.setattr(csvparse, "parse_pixel_csv", no_parsing)
    second = load_dataset("mnist", data_dir=mnist_dir)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert not list(cache.glob("*.tmp"))


def test_cache_dir_argument_then_env_then_user_cache_folder(tmp_path, monkeypatch, mnist_dir):
    load_dataset("mnist", data_dir=mnist_dir, cache_dir=tmp_path / "mine")
    assert len(npy_files(tmp_path / "mine")) == 4
    assert not (tmp_path / "parsed-cache").exists()
    load_dataset("mnist", data_dir=mnist_dir, split="test")
    assert len(npy_files(tmp_path / "parsed-cache")) == 2
    monkeypatch.delenv("KMEANS_MNIST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    load_dataset("mnist", data_dir=mnist_dir, split="test")
    assert len(npy_files(tmp_path / "xdg" / "kmeans-mnist")) == 2
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_dataset("mnist", data_dir=mnist_dir, split="test")
    assert len(npy_files(tmp_path / "home" / ".cache" / "kmeans-mnist")) == 2
    assert not (tmp_path / "dataset").exists()  # nothing under the current folder


def test_changed_file_is_parsed_again(tmp_path, mnist_dir, train):
    path = mnist_dir / "mnist_train.csv"
    before = load_dataset("mnist", data_dir=mnist_dir, split="train", keep_blank=True)
    text = path.read_bytes()
    stat = path.stat()
    # same size, other content: the first label becomes another single digit
    changed = str((train[1][0] + 1) % 10).encode() + text[text.index(b"\n") + 2 :]
    path.write_bytes(text[: text.index(b"\n") + 1] + changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == stat.st_size

    after = load_dataset("mnist", data_dir=mnist_dir, split="train", keep_blank=True)
    assert after.labels[0] == (before.labels[0] + 1) % 10
    np.testing.assert_array_equal(after.labels[1:], before.labels[1:])
    assert len(npy_files(tmp_path / "parsed-cache")) == 2  # the stale entry is gone


def test_corrupt_cache_entry_is_parsed_again(tmp_path, mnist_dir, train):
    load_dataset("mnist", data_dir=mnist_dir, split="train")
    for path in (tmp_path / "parsed-cache").glob("*.npy"):
        path.write_bytes(b"not a numpy file")
    data = load_dataset("mnist", data_dir=mnist_dir, split="train", keep_blank=True)
    np.testing.assert_array_equal(data.images, train[0])
    assert np.load(next((tmp_path / "parsed-cache").glob("*images.npy"))).shape == (N_TRAIN, 28, 28)


def test_unwritable_cache_folder_still_loads(tmp_path, mnist_dir, train):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    data = load_dataset(
        "mnist", data_dir=mnist_dir, split="train", keep_blank=True, cache_dir=not_a_folder / "cache"
    )
    np.testing.assert_array_equal(data.images, train[0])


def test_interrupted_cache_write_leaves_no_entry(tmp_path, monkeypatch, mnist_dir):
    real_save = np.save

    def interrupted_save(file, array, **kwargs):
        file.write(b"\x93NUMPY half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", data_dir=mnist_dir, split="train")
    assert list((tmp_path / "parsed-cache").iterdir()) == []
    monkeypatch.setattr(np, "save", real_save)
    assert len(load_dataset("mnist", data_dir=mnist_dir, split="train", keep_blank=True)) == N_TRAIN


# --- Errors --------------------------------------------------------------------------------------


def set_field(lines: list[str], line_number: int, field_number: int, value: str) -> list[str]:
    """A copy of lines with one field (both numbered from 1, as in the messages) replaced."""
    fields = lines[line_number - 1].split(",")
    fields[field_number - 1] = value
    return [*lines[: line_number - 1], ",".join(fields), *lines[line_number:]]


def drop_last_field(lines: list[str], line_number: int) -> list[str]:
    return [*lines[: line_number - 1], lines[line_number - 1].rsplit(",", 1)[0], *lines[line_number:]]


LAST = N_TRAIN + 1  # line number of the last row
CSV_ERRORS = {
    "784 fields": (lambda L: csv_bytes(drop_last_field(L, 17)), "line 17: 784 fields, expected 785"),
    "786 fields": (lambda L: csv_bytes(set_field(L, 3, 785, "0,0")), "line 3: 786 fields, expected 785"),
    "value 256": (lambda L: csv_bytes(set_field(L, 9, 5, "256")), "line 9: value 256 out of range 0..255"),
    "value 1000": (
        lambda L: csv_bytes(set_field(L, 6, 700, "1000")),
        "line 6: value 1000 out of range 0..255",
    ),
    "label 10": (lambda L: csv_bytes(set_field(L, 8, 1, "10")), "line 8: label 10 out of range 0..9"),
    "label 300": (lambda L: csv_bytes(set_field(L, 10, 1, "300")), "line 10: label 300 out of range 0..9"),
    "empty label": (lambda L: csv_bytes(set_field(L, 13, 1, "")), "line 13: field 1 is empty"),
    "abc": (lambda L: csv_bytes(set_field(L, 4, 3, "abc")), "line 4: 'abc' is not an unsigned integer"),
    "minus one": (lambda L: csv_bytes(set_field(L, 2, 785, "-1")), "line 2: '-1' is not an unsigned integer"),
    "decimal": (lambda L: csv_bytes(set_field(L, 14, 2, "1.5")), "line 14: '1.5' is not an unsigned integer"),
    "space": (lambda L: csv_bytes(set_field(L, 5, 9, " 7")), "line 5: ' 7' is not an unsigned integer"),
    "non-ascii": (lambda L: csv_bytes(set_field(L, 7, 9, "é")), "line 7: 'é' is not an unsigned integer"),
    "empty field": (lambda L: csv_bytes(set_field(L, 11, 3, "")), "line 11: field 3 is empty"),
    "empty line": (lambda L: csv_bytes([*L[:4], "", *L[4:]]), "line 5: empty line"),
    "blank line at the end": (lambda L: csv_bytes([*L, ""]), f"line {LAST + 1}: empty line"),
    "stray CR": (lambda L: csv_bytes(set_field(L, 6, 4, "1\r2")), "line 6: stray carriage return"),
    "stray CR, CRLF file": (
        lambda L: csv_bytes(set_field(L, 12, 4, "1\r2"), newline="\r\n"),
        "line 12: stray carriage return",
    ),
    "truncated last line": (
        lambda L: csv_bytes(L, final_newline=False)[:-300],
        f"line {LAST}: ",
    ),
    "first of two bad lines": (
        lambda L: csv_bytes(set_field(drop_last_field(L, 15), 19, 2, "300")),
        "line 15: 784 fields",
    ),
    "range before count": (
        lambda L: csv_bytes(set_field(drop_last_field(L, 19), 15, 2, "300")),
        "line 15: value 300 out of range",
    ),
    "wrong header": (
        lambda L: csv_bytes(["label,a,b", *L[1:]]),
        "line 1: header is not the MNIST CSV header",
    ),
    "fashion header": (lambda L: csv_bytes([FASHION_HEADER, *L[1:]]), "did you mean --dataset fashion?"),
    "empty file": (lambda L: b"", "is empty"),
    "only a BOM": (lambda L: b"\xef\xbb\xbf", "is empty"),
    "header only": (lambda L: csv_bytes(L[:1]), "has a header but no data rows"),
    "header only, no newline": (lambda L: csv_bytes(L[:1], final_newline=False), "no data rows"),
}


@pytest.mark.parametrize("chunk_bytes", [csvparse.CHUNK_BYTES, SMALL_CHUNK], ids=["1MiB", "small-chunks"])
@pytest.mark.parametrize("case", list(CSV_ERRORS))
def test_bad_csv_names_file_and_line(tmp_path, monkeypatch, train, test, case, chunk_bytes):
    monkeypatch.setattr(csvparse, "CHUNK_BYTES", chunk_bytes)
    folder = write_kaggle(tmp_path / "bad", "mnist", train, test)
    make_text, expected = CSV_ERRORS[case]
    (folder / "mnist_train.csv").write_bytes(make_text(csv_lines(MNIST_HEADER, *train)))
    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist", data_dir=folder)
    message = str(raised.value)
    assert "mnist_train.csv" in message
    assert expected in message
    assert "\n" not in message
    assert not (tmp_path / "parsed-cache").exists() or not npy_files(tmp_path / "parsed-cache")


def test_truncated_last_line_counts_its_fields(tmp_path, train, test):
    folder = write_kaggle(tmp_path / "cut", "mnist", train, test)
    lines = csv_lines(MNIST_HEADER, *train)
    lines[-1] = ",".join(lines[-1].split(",")[:500])
    (folder / "mnist_train.csv").write_bytes(csv_bytes(lines, final_newline=False))
    with pytest.raises(DatasetError, match=rf"mnist_train.csv line {LAST}: 500 fields, expected 785"):
        load_dataset("mnist", data_dir=folder)


def test_bad_fashion_file_names_itself(tmp_path, train, test):
    folder = write_kaggle(tmp_path / "fashion", "fashion", train, test)
    lines = set_field(csv_lines(FASHION_HEADER, *test), 3, 10, "999")
    (folder / "fashion-mnist_test.csv").write_bytes(csv_bytes(lines))
    with pytest.raises(DatasetError, match=r"fashion-mnist_test.csv line 3: value 999 out of range 0..255"):
        load_dataset("fashion", data_dir=folder)


def folder_errors(tmp_path: Path, train, test) -> dict:
    """name -> (keyword arguments of load_dataset, fragments the message must hold)."""
    a_file = tmp_path / "a-file.csv"
    a_file.write_text("x")
    (tmp_path / "empty").mkdir()
    only_train = write_kaggle(tmp_path / "only-train", "mnist", train, test)
    (only_train / "mnist_test.csv").unlink()
    fashion = write_kaggle(tmp_path / "fashion", "fashion", train, test)
    mnist = write_kaggle(tmp_path / "mnist", "mnist", train, test)
    sheets = write_sheets(tmp_path / "sheets")
    return {
        "no such folder": (
            {"name": "mnist", "data_dir": tmp_path / "nowhere"},
            ["nowhere", "does not exist", "mnist_train.csv"],
        ),
        "a file": ({"name": "mnist", "data_dir": a_file}, ["a-file.csv", "is a file, not a folder"]),
        "empty folder": (
            {"name": "fashion", "data_dir": tmp_path / "empty"},
            ["empty", "is empty", "kagglehub"],
        ),
        "missing CSV": (
            {"name": "mnist", "data_dir": only_train},
            ["mnist_test.csv not found in", str(only_train), "--data-dir", "KAGGLEHUB_CACHE"],
        ),
        "fashion files for mnist": (
            {"name": "mnist", "data_dir": fashion},
            ["mnist_train.csv not found", "looks like Fashion-MNIST: did you mean --dataset fashion?"],
        ),
        "mnist files for fashion": (
            {"name": "fashion", "data_dir": mnist},
            ["fashion-mnist_train.csv not found", "looks like MNIST: did you mean --dataset mnist?"],
        ),
        "unknown dataset": ({"name": "emnist"}, ["'emnist'", "mnist, fashion, usps"]),
        "unknown split": (
            {"name": "mnist", "data_dir": mnist, "split": "valid"},
            ["'valid'", "train, test, all"],
        ),
        "limit 0": ({"name": "mnist", "data_dir": mnist, "limit": 0}, ["limit", "at least 1"]),
        "usps train split": (
            {"name": "usps", "data_dir": sheets, "split": "train"},
            ["usps has no train/test split"],
        ),
        "no usps folder": (
            {"name": "usps", "data_dir": tmp_path / "nowhere"},
            ["nowhere", "does not exist", "usps_1.jpg"],
        ),
    }


FOLDER_ERRORS = [
    "no such folder",
    "a file",
    "empty folder",
    "missing CSV",
    "fashion files for mnist",
    "mnist files for fashion",
    "unknown dataset",
    "unknown split",
    "limit 0",
    "usps train split",
    "no usps folder",
]


@pytest.mark.parametrize("case", FOLDER_ERRORS)
def test_folder_and_option_errors(tmp_path, train, test, case):
    arguments, fragments = folder_errors(tmp_path, train, test)[case]
    with pytest.raises(DatasetError) as raised:
        load_dataset(**arguments)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def test_unreadable_csv(monkeypatch, mnist_dir):
    real_open = os.open

    def open_denied(path, *args, **kwargs):
        if str(path).endswith("mnist_test.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_denied)
    with pytest.raises(DatasetError, match=r"cannot read .*mnist_test.csv: Permission denied"):
        load_dataset("mnist", data_dir=mnist_dir)


def test_usps_sheet_not_a_grid_of_tiles(tmp_path):
    folder = write_sheets(tmp_path / "sheets")
    Image.fromarray(np.full((32, 50), 90, dtype=np.uint8)).save(folder / "usps_2.jpg")
    with pytest.raises(DatasetError, match=r"usps_2.jpg is 32x50 px \(HxW\), not a grid of 16x16 tiles"):
        load_dataset("usps", data_dir=folder)


def test_usps_sheet_not_an_image(tmp_path):
    folder = write_sheets(tmp_path / "sheets")
    (folder / "usps_3.jpg").write_text("no picture here")
    with pytest.raises(DatasetError, match=r"usps_3.jpg is not an image"):
        load_dataset("usps", data_dir=folder)


def test_usps_missing_sheet(tmp_path):
    folder = write_sheets(tmp_path / "sheets")
    (folder / "usps_4.jpg").unlink()
    with pytest.raises(DatasetError) as raised:
        load_dataset("usps", data_dir=folder)
    message = str(raised.value)
    assert "usps_4.jpg not found in" in message and str(folder) in message and "--data-dir" in message


# --- kagglehub ----------------------------------------------------------------------------------


def test_kagglehub_failure_says_how_to_work_offline(monkeypatch):
    kagglehub = pytest.importorskip("kagglehub")
    requests = pytest.importorskip("requests")

    def offline(handle, *args, **kwargs):
        raise requests.exceptions.ConnectionError(f"Max retries exceeded for {handle}\nsecond line")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DatasetError) as raised:
        load_dataset("fashion")
    message = str(raised.value)
    assert "kagglehub download of zalando-research/fashionmnist/versions/4 failed" in message
    assert "ConnectionError" in message and "--data-dir" in message and "KAGGLEHUB_CACHE" in message
    assert "\n" not in message
    assert isinstance(raised.value.__cause__, requests.exceptions.ConnectionError)


def test_real_kagglehub_with_an_empty_cache_fails_fast(tmp_path, monkeypatch):
    """The real kagglehub and requests, with nothing cached; a dead proxy makes sure nothing is downloaded."""
    pytest.importorskip("kagglehub")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-kagglehub"))
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    started = time.perf_counter()
    with pytest.raises(
        DatasetError, match=r"kagglehub download of oddrationale/mnist-in-csv/versions/2 failed"
    ):
        load_dataset("mnist")
    assert time.perf_counter() - started < 10


def pin_to(monkeypatch, name: str, train, test) -> None:
    """Make the generated files the pinned version's content, as far as the download check can tell."""
    pinned = {
        split: (tuple(np.bincount(labels, minlength=10).tolist()), int(images.sum(dtype=np.uint64)))
        for split, (images, labels) in (("train", train), ("test", test))
    }
    spec = dataclasses.replace(
        datasets.KAGGLE[name],
        label_counts={split: counts for split, (counts, _) in pinned.items()},
        pixel_sums={split: total for split, (_, total) in pinned.items()},
    )
    monkeypatch.setitem(datasets.KAGGLE, name, spec)


def test_kagglehub_folder_is_remembered_while_its_files_are_there(monkeypatch, mnist_dir, train, test):
    """kagglehub is asked once; later loads reuse its folder until the files go missing."""
    kagglehub = pytest.importorskip("kagglehub")
    calls = []

    def cached_download(handle, *args, **kwargs):
        calls.append(handle)
        return str(mnist_dir)

    monkeypatch.setattr(kagglehub, "dataset_download", cached_download)
    pin_to(monkeypatch, "mnist", train, test)
    first = load_dataset("mnist", keep_blank=True)
    second = load_dataset("mnist", keep_blank=True)
    assert calls == ["oddrationale/mnist-in-csv/versions/2"]
    assert np.array_equal(first.images, second.images) and str(mnist_dir) in second.source

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(mnist_dir.parent / "another-cache"))  # another cache: ask again
    load_dataset("mnist", keep_blank=True)
    assert len(calls) == 2

    (mnist_dir / "mnist_test.csv").unlink()  # the remembered folder lost a file: ask kagglehub again
    with pytest.raises(DatasetError, match=r"mnist_test\.csv not found"):
        load_dataset("mnist")
    assert len(calls) == 3
