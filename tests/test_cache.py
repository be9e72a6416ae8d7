"""The parsed-data cache never serves data that does not match the file, and never hangs;
kagglehub downloads are checked; a CSV file is read in bounded blocks."""

import dataclasses
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from cli_support import MNIST_HEADER, csv_lines, kaggle_csv, random_images, write_kaggle
from kmeans_mnist.data import cache, csvparse, datasets
from kmeans_mnist.data.datasets import DatasetError, load_dataset


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def load_train(folder: Path):
    return load_dataset("mnist", data_dir=folder, split="train", keep_blank=True)


def count_parses(monkeypatch) -> list:
    calls = []
    real = datasets._parse_csv

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "_parse_csv", counting)
    return calls


def same_size_other_labels(path: Path, seed: int) -> bytes:
    """The file with other labels in every row, byte for byte as long (labels are one digit)."""
    text = path.read_bytes()
    lines = text.split(b"\n")
    labels = np.random.default_rng(seed).integers(0, 10, len(lines))
    changed = [lines[0]] + [
        str(label).encode() + line[1:] if line else line
        for label, line in zip(labels[1:], lines[1:], strict=True)
    ]
    result = b"\n".join(changed)
    assert len(result) == len(text) and result != text
    return result


@pytest.mark.parametrize("how", ["cp -p", "rewrite in place, times restored"])
def test_replaced_file_with_same_size_and_time_is_parsed_again(tmp_path, monkeypatch, how):
    folder = write_kaggle(tmp_path / "data", n_train=30)
    path = folder / "mnist_train.csv"
    before = load_train(folder)
    state = path.stat()
    replacement = same_size_other_labels(path, 1)
    if how == "cp -p":  # a new file (another inode) with the old one's size and times
        other = tmp_path / "other.csv"
        other.write_bytes(replacement)
        os.utime(other, ns=(state.st_atime_ns, state.st_mtime_ns))
        os.replace(other, path)
    else:  # the same inode, its times set back: only the ctime and the content tell
        with open(path, "r+b") as file:
            file.write(replacement)
        os.utime(path, ns=(state.st_atime_ns, state.st_mtime_ns))
    assert path.stat().st_size == state.st_size and path.stat().st_mtime_ns == state.st_mtime_ns
    calls = count_parses(monkeypatch)
    after = load_train(folder)
    assert calls == [path]
    np.testing.assert_array_equal(after.labels, [int(line[:1]) for line in replacement.split(b"\n")[1:-1]])
    assert not np.array_equal(after.labels, before.labels)
    assert (
        len(list((tmp_path / "parsed-cache").glob("mnist_train.csv-*.meta.json"))) == 1
    )  # the stale entry went


def test_content_check_catches_what_the_metadata_cannot(tmp_path, monkeypatch):
    """Even with the file's status unchanged to the nanosecond, other first bytes mean another entry."""
    folder = write_kaggle(tmp_path / "data", n_train=30)
    path = folder / "mnist_train.csv"
    first = cache.fingerprint(path)
    with path.open("rb") as file:
        frozen = os.fstat(file.fileno())
    monkeypatch.setattr(os, "fstat", lambda fd: frozen)
    with open(path, "r+b") as file:
        file.write(same_size_other_labels(path, 2))
    assert cache.fingerprint(path) != first


@pytest.mark.parametrize(
    "damage",
    ["labels out of range", "fewer rows", "negative label", "meta missing", "images not uint8"],
)
def test_cache_entry_with_impossible_values_is_rebuilt(tmp_path, monkeypatch, damage):
    folder = write_kaggle(tmp_path / "data", n_train=30)
    good = load_train(folder)
    cache_folder = tmp_path / "parsed-cache"
    [images_file] = cache_folder.glob("mnist_train.csv-*.images.npy")
    [labels_file] = cache_folder.glob("mnist_train.csv-*.labels.npy")
    if damage == "labels out of range":
        np.save(labels_file, np.full(30, 12, dtype=np.int64))
    elif damage == "negative label":
        np.save(labels_file, np.full(30, -1, dtype=np.int64))
    elif damage == "fewer rows":
        np.save(images_file, np.load(images_file)[:20])
        np.save(labels_file, np.load(labels_file)[:20])
    elif damage == "meta missing":
        next(cache_folder.glob("*.meta.json")).unlink()
    else:
        np.save(images_file, np.load(images_file).astype(np.int16))
    calls = count_parses(monkeypatch)
    again = load_train(folder)
    assert len(calls) == 1
    np.testing.assert_array_equal(again.labels, good.labels)
    np.testing.assert_array_equal(again.images, good.images)


@pytest.mark.parametrize("thing", ["fifo", "folder"])
@pytest.mark.parametrize("part", ["images.npy", "meta.json", "kagglehub memo"])
def test_a_pipe_or_folder_where_a_cache_entry_should_be_never_hangs(tmp_path, monkeypatch, thing, part):
    folder = write_kaggle(tmp_path / "data", n_train=12)
    kagglehub = pytest.importorskip("kagglehub")
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(folder))
    pin(monkeypatch, random_images(12, 0), random_images(10, 1))
    first = load_dataset("mnist", keep_blank=True)
    cache_folder = tmp_path / "parsed-cache"
    if part == "kagglehub memo":
        [target] = cache_folder.glob("kagglehub-*.txt")
    else:
        [target] = cache_folder.glob(f"mnist_train.csv-*.{part}")
    target.unlink()
    os.mkfifo(target) if thing == "fifo" else target.mkdir()
    outcome = {}

    def load_twice():
        outcome["first"] = load_dataset("mnist", keep_blank=True)
        outcome["second"] = load_dataset("mnist", keep_blank=True)

    worker = threading.Thread(target=load_twice, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "a load blocked on the cache"
    np.testing.assert_array_equal(outcome["second"].images, first.images)
    assert (target.is_fifo() if thing == "fifo" else target.is_dir()) or part != "kagglehub memo"


# --- kagglehub downloads --------------------------------------------------------------------------


def fake_download(monkeypatch, folder: Path) -> None:
    kagglehub = pytest.importorskip("kagglehub")
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: str(folder))


def pin(monkeypatch, train, test) -> None:
    counts = {
        split: tuple(np.bincount(labels, minlength=10).tolist())
        for split, (_, labels) in train_test(train, test)
    }
    sums = {split: int(images.sum(dtype=np.uint64)) for split, (images, _) in train_test(train, test)}
    spec = dataclasses.replace(datasets.KAGGLE["mnist"], label_counts=counts, pixel_sums=sums)
    monkeypatch.setitem(datasets.KAGGLE, "mnist", spec)


def train_test(train, test):
    return (("train", train), ("test", test))


@pytest.mark.parametrize("cut", ["at a row boundary", "inside a row", "a changed pixel"])
def test_incomplete_kagglehub_download_is_one_error(tmp_path, monkeypatch, cut):
    train, test = random_images(40, 0), random_images(10, 1)
    folder = tmp_path / "kagglehub" / "versions" / "2"
    folder.mkdir(parents=True)
    for name, (images, labels) in (("mnist_train.csv", train), ("mnist_test.csv", test)):
        (folder / name).write_bytes(kaggle_csv(csv_lines(images, labels)))
    fake_download(monkeypatch, folder)
    pin(monkeypatch, train, test)
    assert len(load_dataset("mnist")) == 50  # complete: fine, and remembered
    path = folder / "mnist_train.csv"
    text = path.read_bytes()
    lines = text.split(b"\n")
    if cut == "at a row boundary":
        path.write_bytes(b"\n".join(lines[:26]) + b"\n")
        expected = "holds 25 images, expected 40"
    elif cut == "inside a row":
        path.write_bytes(text[: len(text) // 2])
        expected = "line 20: 749 fields, expected 785"
    else:
        row = lines[5].split(b",")
        row[300] = b"7" if row[300] != b"7" else b"8"
        lines[5] = b",".join(row)
        path.write_bytes(b"\n".join(lines))
        expected = "checksum differs"
    with pytest.raises(DatasetError) as raised:
        load_dataset("mnist")
    message = str(raised.value)
    assert "the kagglehub download of oddrationale/mnist-in-csv/versions/2 is incomplete" in message
    assert expected in message and f"delete {folder}" in message and "\n" not in message


def test_pinned_checksums_are_those_of_the_real_data(shared_datasets):
    from conftest import read_idx_images

    for name, folder in (("mnist", "mnist"), ("fashion", "fashion-mnist")):
        spec = datasets.KAGGLE[name]
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx_images(shared_datasets / folder / f"{prefix}-images-idx3-ubyte.gz")
            assert int(images.sum(dtype=np.uint64)) == spec.pixel_sums[split]
            assert len(images) == sum(spec.label_counts[split])


# --- CSV files larger than memory, or not CSV at all ------------------------------------------------


class CountingReads:
    """Wraps open_regular to count the bytes a parse reads."""

    def __init__(self, monkeypatch):
        self.read = 0
        real = csvparse.open_regular

        def counting_open(path):
            file = real(path)
            real_read = file.read

            def read(size=-1):
                data = real_read(size)
                self.read += len(data)
                return data

            file.read = read
            return file

        monkeypatch.setattr(csvparse, "open_regular", counting_open)


@pytest.mark.parametrize(
    "start", [b"\x00\xffrandom", MNIST_HEADER.encode()[:100] + b"garbage"], ids=["binary", "near-header"]
)
def test_a_huge_file_wrong_on_line_1_fails_without_reading_it(tmp_path, monkeypatch, start):
    folder = tmp_path / "data"
    write_kaggle(folder)
    path = folder / "mnist_train.csv"
    with open(path, "wb") as file:  # 1 GiB, sparse: costs no disk
        file.write(start + np.random.default_rng(0).bytes(4096))
        file.truncate(1 << 30)
    reads = CountingReads(monkeypatch)
    with pytest.raises(DatasetError, match=r"mnist_train.csv line 1: header is not the MNIST CSV header"):
        load_train(folder)
    assert reads.read <= 2 * csvparse.CHUNK_BYTES


def test_a_huge_generic_csv_wrong_on_its_first_rows_fails_fast(tmp_path, monkeypatch):
    path = tmp_path / "big.csv"
    with open(path, "wb") as file:
        file.write(b"label,a,b\n1,2,3\n")
        file.truncate(1 << 30)  # the rest: NUL bytes
    reads = CountingReads(monkeypatch)
    with pytest.raises(DatasetError, match=r"big.csv"):
        load_dataset("files", data_dir=path)
    assert reads.read <= 3 * csvparse.CHUNK_BYTES


def test_parse_reads_in_bounded_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(csvparse, "CHUNK_BYTES", 5000)
    images, labels = random_images(60, 3)
    path = tmp_path / "data" / "mnist_train.csv"
    path.parent.mkdir()
    path.write_bytes(kaggle_csv(csv_lines(images, labels), newline=b"\r\n", final_newline=False))
    biggest = []
    real_decode = csvparse._decode_lines
    monkeypatch.setattr(
        csvparse, "_decode_lines", lambda text, *a: biggest.append(len(text)) or real_decode(text, *a)
    )
    data = load_train(path.parent)
    np.testing.assert_array_equal(data.images, images)
    assert len(biggest) > 5 and max(biggest) < 3 * 5000 + 4 * 785 * 4


def test_memory_error_is_one_line(tmp_path, monkeypatch):
    folder = write_kaggle(tmp_path / "data")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(csvparse, "_decode_lines", no_memory)
    with pytest.raises(DatasetError, match=r"mnist_train.csv is too large to parse in memory: save .* \.npy"):
        load_train(folder)


def test_not_a_regular_file_is_not_called_missing(tmp_path):
    folder = write_kaggle(tmp_path / "data")
    (folder / "mnist_test.csv").unlink()
    (folder / "mnist_test.csv").mkdir()
    with pytest.raises(DatasetError, match=r"mnist_test.csv is a folder, not a regular file"):
        load_dataset("mnist", data_dir=folder)
    shutil.rmtree(folder / "mnist_test.csv")
    os.mkfifo(folder / "mnist_test.csv")
    with pytest.raises(DatasetError, match=r"mnist_test.csv is a named pipe \(FIFO\), not a regular file"):
        load_dataset("mnist", data_dir=folder)
    os.mkfifo(tmp_path / "sheets")
    with pytest.raises(DatasetError, match=r"sheets is a named pipe \(FIFO\), not a folder"):
        load_dataset("usps", data_dir=tmp_path / "sheets")


def test_cache_folder_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("KMEANS_MNIST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_folder() == tmp_path / "xdg" / "kmeans-mnist"
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "mine"))
    assert cache.cache_folder() == tmp_path / "mine"
    assert cache.cache_folder(tmp_path / "given") == tmp_path / "given"
