"""Hostile and damaged inputs to the data layer (issue 25): each class is read correctly or refused
with one line, never served wrong, never a traceback, a hang or a silent death, never gigabytes
of memory for a file that promised little.

Classes: a numbered CSV header (pandas), cache entries swapped for others, a gzip IDX that
decompresses beyond its header, damaged .npy/.npz and labels, bad API arguments, images or a fit
too large for memory (refused before reading), a mapped file cut short during a run (SIGBUS).
"""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import isolated_env, run_cli
from kmeans_mnist import cli
from kmeans_mnist.cli import preflight
from kmeans_mnist.data import cache, csvparse, images, sources
from kmeans_mnist.data.datasets import DatasetError, load_dataset


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def digits(count: int, seed: int = 0, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """count side x side uint8 images, none all black, and labels 0..2."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, side, side), dtype=np.uint8)
    images[:, side // 2, side // 2] = 200
    return images, (np.arange(count) % 3).astype(np.int64)


def files(path, **options):
    return load_dataset("files", data_dir=path, keep_blank=True, **options)


def refused(path, *fragments, **options) -> str:
    with pytest.raises(DatasetError) as raised:
        files(path, **options)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """The run failed with exit 2 and one `error:` line holding the fragments (no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- a CSV whose header line is the column numbers (pandas) ----------------------------------------


@pytest.mark.parametrize("with_labels", [False, True], ids=["pixels", "label-and-pixels"])
def test_a_numbered_header_as_pandas_writes_it_is_not_an_image(tmp_path, with_labels):
    pandas = pytest.importorskip("pandas", reason='needs pandas, in the test extra: pip install -e ".[test]"')
    images, labels = digits(6)
    rows = images.reshape(6, -1)
    table = np.column_stack([labels, rows]) if with_labels else rows
    pandas.DataFrame(table).to_csv(tmp_path / "frame.csv", index=False)
    assert (tmp_path / "frame.csv").read_text().startswith("0,1,2,3,")  # what pandas writes
    data = files(tmp_path / "frame.csv")
    assert len(data) == 6
    np.testing.assert_array_equal(data.images, images)
    if with_labels:
        np.testing.assert_array_equal(data.labels, labels)
    else:
        assert data.labels is None


def test_numbered_columns_is_exactly_a_count_from_0_or_1():
    assert csvparse.numbered_columns(b"0,1,2,3")
    assert csvparse.numbered_columns(b"1,2,3,4,5")
    assert not csvparse.numbered_columns(b"0,1,3,4")  # a row of pixels that merely starts so
    assert not csvparse.numbered_columns(b"2,3,4,5")
    assert not csvparse.numbered_columns(b"0,0,0,0")
    assert not csvparse.numbered_columns(b"7")


def test_a_first_row_of_pixels_is_still_a_row(tmp_path):
    images, _ = digits(3, side=2)
    images[0] = [[0, 1], [2, 4]]  # counts up, but not one by one to the end
    text = "\n".join(",".join(map(str, image.ravel())) for image in images) + "\n"
    (tmp_path / "rows.csv").write_text(text)
    np.testing.assert_array_equal(files(tmp_path / "rows.csv").images, images)


# --- the parsed-data cache verifies its own arrays ---------------------------------------------------


def two_cached_csvs(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """Two CSV files of one shape, both parsed into the cache; returns them and their entries."""
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    for path, seed in ((first, 1), (second, 2)):
        images, labels = digits(5, seed, side=3)
        labels = np.roll(labels, seed)  # other labels too, in the same counts
        rows = [
            ",".join(map(str, [label, *image.ravel()])) for image, label in zip(images, labels, strict=True)
        ]
        path.write_text("\n".join(rows) + "\n")
        files(path)
    entries = sorted((tmp_path / "parsed-cache").glob("*.meta.json"))
    assert len(entries) == 2
    return first, second, [Path(str(entry).removesuffix(".meta.json")) for entry in entries]


def count_parses(monkeypatch) -> list:
    calls = []
    real = csvparse.parse_pixel_csv
    monkeypatch.setattr(csvparse, "parse_pixel_csv", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("swapped", ["images", "labels", "images and labels", "whole entry"])
def test_arrays_swapped_in_from_another_entry_are_never_served(tmp_path, monkeypatch, swapped):
    _, second, entries = two_cached_csvs(tmp_path)
    expected = files(second)
    target = next(entry for entry in entries if entry.name.startswith("second.csv"))
    donor = next(entry for entry in entries if entry.name.startswith("first.csv"))
    parts = {"images": ["images"], "labels": ["labels"], "whole entry": ["images", "labels", "meta"]}
    for part in parts.get(swapped, ["images", "labels"]):
        suffix = ".meta.json" if part == "meta" else f".{part}.npy"
        shutil.copyfile(f"{donor}{suffix}", f"{target}{suffix}")
    calls = count_parses(monkeypatch)
    served = files(second)
    assert calls == [second]  # the entry failed its own check: parsed again
    np.testing.assert_array_equal(served.images, expected.images)
    np.testing.assert_array_equal(served.labels, expected.labels)
    assert files(second) is not None and calls == [second]  # and the mended entry is served again


def test_a_valid_entry_is_still_served_without_parsing(tmp_path, monkeypatch):
    _, second, _ = two_cached_csvs(tmp_path)
    calls = count_parses(monkeypatch)
    files(second)
    assert calls == []


def test_the_record_holds_a_crc_of_each_array(tmp_path):
    _, _, entries = two_cached_csvs(tmp_path)
    import json

    meta = json.loads(Path(f"{entries[0]}.meta.json").read_text())
    assert meta["entry"] == entries[0].name
    images = np.load(f"{entries[0]}.images.npy")
    assert meta["crc32"]["images"] == zlib.crc32(images.tobytes()) == cache.array_crc32(images)


# --- a gzip IDX reads no more than its header promises ------------------------------------------


def idx_header(shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(n.to_bytes(4, "big") for n in shape)


def test_a_gzip_idx_that_decompresses_far_beyond_its_header_is_refused_cheaply(tmp_path, monkeypatch):
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as file:
        file.write(idx_header((2, 4, 4)) + bytes(32))
        for _ in range(64):  # 64 MiB of zeros after what the header promises
            file.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        message = refused(path, str(path), "more than the 48 bytes its header promises")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # not the 64 MiB it decompresses to
    assert "damaged" in message


def test_a_gzip_idx_whose_header_promises_more_than_gzip_can_hold_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "liar-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((60000, 4000, 4000)) + bytes(16)))
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("allocated for a lying header"))
    refused(path, "damaged", "more than a gzip file of")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_an_idx_cut_short_says_so(tmp_path, gz):
    data = idx_header((3, 4, 4)) + bytes(range(48))
    path = tmp_path / f"cut-images-idx3-ubyte{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data[:-10]) if gz else data[:-10])
    refused(path, "cut off", "promises 64 bytes, it holds 54")
    path.write_bytes(gzip.compress(data) if gz else data)
    assert files(path).images.shape == (3, 4, 4)


# --- damaged NumPy files and labels ------------------------------------------------------------


def test_an_npz_with_y_train_but_no_y_test_is_refused(tmp_path):
    images, labels = digits(10)
    np.savez(tmp_path / "keras.npz", x_train=images[:6], y_train=labels[:6], x_test=images[6:])
    refused(tmp_path / "keras.npz", "'x_test' has no labels", "'y_test' is missing", "--split")
    train = files(tmp_path / "keras.npz", split="train")
    np.testing.assert_array_equal(train.labels, labels[:6])
    assert files(tmp_path / "keras.npz", split="test").labels is None


@pytest.mark.parametrize("keep_blank", [True, False])
def test_images_without_pixels_are_refused(tmp_path, keep_blank):
    np.save(tmp_path / "empty.npy", np.zeros((5, 0), np.uint8))
    with pytest.raises(DatasetError, match=r"shape \(5, 0\): its images have no pixels"):
        load_dataset("files", data_dir=tmp_path / "empty.npy", keep_blank=keep_blank)
    np.save(tmp_path / "flat.npy", np.zeros((5, 0, 3), np.uint8))
    refused(tmp_path / "flat.npy", "no pixels")


@pytest.mark.parametrize("orientation", ["column", "row"])
def test_labels_as_loadmat_gives_them_are_accepted(tmp_path, orientation):
    images, labels = digits(9)
    shaped = labels[:, None] if orientation == "column" else labels[None, :]
    np.savez(tmp_path / "mat.npz", images=images, labels=shaped)
    np.testing.assert_array_equal(files(tmp_path / "mat.npz").labels, labels)
    np.savez(tmp_path / "grid.npz", images=images, labels=labels[:8].reshape(2, 4))
    refused(tmp_path / "grid.npz", "labels of shape (2, 4)", "one label per image")


@pytest.mark.parametrize("cut", [5, 40, 100, -7], ids=["in-magic", "in-header", "after-header", "in-data"])
def test_a_npy_cut_short_says_it_is_cut_off(tmp_path, cut):
    images, _ = digits(4)
    np.save(tmp_path / "whole.npy", images)
    content = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(content[:cut])
    message = refused(tmp_path / "cut.npy", "cut off")
    assert "Python objects" not in message


def test_an_npz_cut_short_says_it_is_cut_off(tmp_path):
    images, labels = digits(4)
    np.savez(tmp_path / "whole.npz", images=images, labels=labels)
    content = (tmp_path / "whole.npz").read_bytes()
    for cut in (150, len(content) // 2, len(content) - 30):
        (tmp_path / "cut.npz").write_bytes(content[:cut])
        assert "Python objects" not in refused(tmp_path / "cut.npz", "cut off or damaged")


def test_python_objects_are_still_named_as_such(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{}], dtype=object), allow_pickle=True)
    refused(tmp_path / "objects.npy", "Python objects")
    np.savez(tmp_path / "objects.npz", images=np.array([{}], dtype=object))
    refused(tmp_path / "objects.npz", "Python objects", "'images'")


def test_the_cli_says_cut_off_in_one_line(tmp_path):
    images, _ = digits(20)
    np.save(tmp_path / "set.npy", images)
    (tmp_path / "set.npy").write_bytes((tmp_path / "set.npy").read_bytes()[:200])
    result = run_cli(["2", "--dataset", "files", "--data-dir", "set.npy", "--output", "out"], tmp_path)
    one_error_line(result, "set.npy is cut off")


# --- the API refuses bad arguments at once ------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"limit": 2.5},
        {"limit": True},
        {"limit": "3"},
        {"size": (0, 28)},
        {"size": (28, -1)},
        {"size": 28},
        {"size": (28, 28, 28)},
        {"shape": (8, 8.0)},
        {"shape": (0, 64)},
    ],
    ids=str,
)
def test_bad_limit_size_or_shape_is_a_clear_error(tmp_path, options):
    images, _ = digits(10)
    np.save(tmp_path / "set.npy", images)
    with pytest.raises(DatasetError, match=f"^{next(iter(options))} must be"):
        load_dataset("files", data_dir=tmp_path / "set.npy", **options)


def test_numpy_integers_are_whole_numbers(tmp_path):
    images, _ = digits(10)
    np.save(tmp_path / "set.npy", images.reshape(10, 64))
    data = load_dataset("files", data_dir=tmp_path / "set.npy", limit=np.int64(4), shape=[np.int32(8), 8])
    assert len(data) == 4 and data.image_shape == (8, 8)


# --- memory: every buffer counted, what cannot fit refused before reading ------------------------


def test_the_estimate_counts_the_conversion_buffer_of_very_wide_images():
    """A few images of a million pixels: the engine converts rows into a buffer that was 1,024
    rows whatever N (4 GiB here); now it is at most N rows, and the estimate covers the peak."""
    from kmeans_mnist.engine import lloyd

    X = np.random.default_rng(0).integers(0, 256, (8, 1 << 20), dtype=np.uint8)
    tracemalloc.start()
    try:
        lloyd.fit(X, 2, random_state=0, max_iter=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= lloyd.estimate(8, 1 << 20, 2, dtype=np.uint8, max_iter=3).bytes


def small_pngs(folder: Path, count: int = 3) -> Path:
    folder.mkdir()
    images, _ = digits(count)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize("size", ["40000", "300000"])
def test_a_huge_size_is_refused_before_any_image_is_read(tmp_path, size):
    small_pngs(tmp_path / "pics")
    args = ["2", "--dataset", "files", "--data-dir", "pics", "--size", size, "--output", "out"]
    result = run_cli(args, tmp_path, timeout=60)
    line = one_error_line(result, f"3 images of {size}x{size}", "GiB is available", "smaller --size")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.npz")), line


def fake_memory(monkeypatch, available: int) -> list:
    """available_memory() gives `available`; returns the list of images decoded (none, hopefully)."""
    decoded = []
    real = images.decode_image  # what a folder's images are decoded by (sources imports it when reading)
    monkeypatch.setattr(preflight, "available_memory", lambda: available)
    monkeypatch.setattr(images, "decode_image", lambda *a: decoded.append(a[0]) or real(*a))
    return decoded


def test_images_alone_beyond_memory_are_refused_before_decoding(tmp_path, monkeypatch, capsys):
    small_pngs(tmp_path / "pics")
    decoded = fake_memory(monkeypatch, 50 << 20)  # decoded one by one, then stacked: 2 x 48 MB
    code = cli.main(["2", "--dataset", "files", "--data-dir", "pics", "--size", "4000", "--output", "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0] == (
        "error: reading pics needs about 92 MiB of memory (3 images of 4000x4000) and 50 MiB is available: "
        "use a smaller --size"
    )
    assert decoded == []


def test_a_fit_beyond_memory_is_refused_before_decoding(tmp_path, monkeypatch, capsys):
    """--size 2828: 3 images take 23 MiB, but K=2's centres and sums alone take 0.7 GiB."""
    small_pngs(tmp_path / "pics")
    decoded = fake_memory(monkeypatch, 200 << 20)
    code = cli.main(["2", "--dataset", "files", "--data-dir", "pics", "--size", "2828", "--output", "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: K=2 needs about ") and "for 3 images of 2828x2828" in err[0]
    assert "--limit" in err[0] and decoded == []
    fake_memory(monkeypatch, 8 << 30)  # with memory enough the same run is not refused by the plan
    planned = []
    check = preflight.planned_memory(
        cli.parse_args(["2", "--dataset", "files", "--data-dir", "pics", "--size", "2828"])
    )
    sources.read_source(Path("pics"), size=(2828, 2828), plan=lambda p: planned.append(p) or check(p))
    assert planned[0].n_images == 3 and planned[0].image_shape == (2828, 2828)


@pytest.mark.parametrize("kind", ["npy", "npy-float", "npz", "idx", "idx-gz"])
def test_the_plan_comes_from_the_headers(tmp_path, kind):
    images, labels = digits(6, side=10)
    if kind == "npy":
        np.save(tmp_path / "set.npy", images)
        path, load, resident = tmp_path / "set.npy", 0, 0  # mapped: no memory
    elif kind == "npy-float":
        np.save(tmp_path / "set.npy", images.astype(np.float32))
        path, load, resident = tmp_path / "set.npy", 600 + 600 * 4, 600  # uint8, and rint's float32
    elif kind == "npz":
        np.savez(
            tmp_path / "set.npz", x_train=images[:4], y_train=labels[:4], x_test=images[4:], y_test=labels[4:]
        )
        path, load, resident = tmp_path / "set.npz", 600 + 600, 600  # read, then joined
    else:
        gz = kind == "idx-gz"
        for part, rows in (("train", images[:4]), ("t10k", images[4:])):
            data = idx_header(rows.shape) + rows.tobytes()
            name = tmp_path / "idx" / f"{part}-images-idx3-ubyte{'.gz' if gz else ''}"
            name.parent.mkdir(exist_ok=True)
            name.write_bytes(gzip.compress(data) if gz else data)
        path, load, resident = tmp_path / "idx", (600 if gz else 0) + 600, 600
    planned = []
    data = files(path, plan=planned.append)
    assert len(data) == 6 and len(planned) == 1
    assert (planned[0].n_images, planned[0].image_shape) == (6, (10, 10))
    assert (planned[0].load_bytes, planned[0].resident_bytes) == (load, resident)


class NoRoom(Exception):
    pass


@pytest.mark.parametrize("name", ["set.npy", "set.npz", "idx", "pics"])
def test_a_plan_that_refuses_stops_the_reading_with_its_own_exception(tmp_path, name):
    images, labels = digits(6)
    np.save(tmp_path / "set.npy", images.astype(np.float64))
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "train-images-idx3-ubyte").write_bytes(idx_header(images.shape) + images.tobytes())
    small_pngs(tmp_path / "pics")

    def refuse(planned):
        raise NoRoom(f"no room for {planned.n_images}")

    with pytest.raises(NoRoom, match=r"^no room for [36]$"):  # never reworded by a reader
        files(tmp_path / name, plan=refuse)


def test_a_huge_npy_is_refused_from_its_header(tmp_path, monkeypatch, capsys):
    """A sparse .npy of 64 float64 images of 4096x4096 (8 GiB, on disk almost nothing)."""
    with open(tmp_path / "huge.npy", "wb") as file:
        header = {"descr": "<f8", "fortran_order": False, "shape": (64, 4096, 4096)}
        np.lib.format.write_array_header_1_0(file, header)
        file.truncate(file.tell() + 64 * 4096 * 4096 * 8)
    fake_memory(monkeypatch, 2 << 30)
    code = cli.main(["2", "--dataset", "files", "--data-dir", str(tmp_path / "huge.npy"), "--output", "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(
        f"error: reading {tmp_path / 'huge.npy'} needs about 9.0 GiB of memory (64 images"
    )


def test_available_memory_honours_an_address_space_limit():
    script = "from kmeans_mnist.cli.preflight import available_memory; print(available_memory())"
    limit = 3 << 30

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=limited, check=True
    )
    assert 0 < int(result.stdout) < limit


@pytest.mark.parametrize("version", ["v2", "v1", "v1-unlimited"])
def test_available_memory_honours_a_container_limit(tmp_path, monkeypatch, version):
    root = tmp_path / "cgroup"
    if version == "v2":
        (tmp_path / "proc").write_text("0::/box\n")
        files_at = {"box/memory.max": "1000000000", "box/memory.current": "400000000"}
    else:
        (tmp_path / "proc").write_text("4:memory:/box\n1:cpu:/\n0::/\n")
        limit = "9223372036854771712" if version == "v1-unlimited" else "1000000000"
        files_at = {"memory/memory.limit_in_bytes": limit, "memory/memory.usage_in_bytes": "400000000"}
    for name, text in files_at.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    monkeypatch.setattr(preflight, "CGROUP_ROOT", root)
    monkeypatch.setattr(preflight, "PROC_CGROUP", tmp_path / "proc")
    monkeypatch.setattr(preflight, "_machine_memory", lambda: 5_000_000_000)
    monkeypatch.setattr(preflight, "_address_space_left", lambda: None)
    expected = 5_000_000_000 if version == "v1-unlimited" else 600_000_000
    assert preflight.available_memory() == expected


def test_an_allocation_that_fails_anyway_is_one_line(tmp_path, monkeypatch, capsys):
    images, _ = digits(20)
    np.save(tmp_path / "set.npy", images)

    def no_memory(args):
        raise MemoryError("Unable to allocate 34.3 GiB for an array with shape (1024, 9000000)")

    monkeypatch.setattr(cli, "run", no_memory)
    assert cli.main(["2", "--dataset", "files", "--data-dir", "set.npy"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of memory (Unable to allocate 34.3 GiB"), err


# --- a memory-mapped file cut short during a run --------------------------------------------------


SIGBUS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from concurrent.futures import ThreadPoolExecutor
    from kmeans_mnist.cli.sigbus import mapped_file, say_on_sigbus
    from kmeans_mnist.data.datasets import load_dataset

    data = load_dataset("files", data_dir="set.npy", keep_blank=True)
    path = mapped_file(data.images)
    assert path and path.endswith("set.npy"), path
    if sys.argv[1] == "handled":
        assert say_on_sigbus(path, 2)
    os.truncate("set.npy", 4096)  # another program cuts the file short
    rows = data.all_pixel
    with ThreadPoolExecutor(2) as pool:  # read on worker threads, as the engine does
        print(sum(pool.map(lambda part: int(rows[part::2].sum()), range(2))))
    """
)


@pytest.mark.skipif(not hasattr(os, "truncate") or sys.platform == "win32", reason="needs SIGBUS")
def test_a_mapped_file_cut_short_while_read_is_one_error_line(tmp_path):
    np.save(tmp_path / "set.npy", np.full((512, 64, 64), 7, np.uint8))
    (tmp_path / "run.py").write_text(SIGBUS_SCRIPT)
    env = isolated_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(cli.__file__).parents[2]), env.get("PYTHONPATH")])
    )
    before = subprocess.run(
        [sys.executable, "run.py", "bare"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    # without the handler: killed by SIGBUS, not a word
    assert before.returncode == -signal.SIGBUS and before.stderr == ""
    np.save(tmp_path / "set.npy", np.full((512, 64, 64), 7, np.uint8))
    after = subprocess.run(
        [sys.executable, "run.py", "handled"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    one_error_line(after, "set.npy was cut short by another program", "SIGBUS")
    assert after.stdout == ""


def test_the_cli_installs_the_handler_for_a_mapped_source(tmp_path, monkeypatch):
    images, _ = digits(30)
    np.save(tmp_path / "set.npy", images)
    installed = []
    from kmeans_mnist.cli import sigbus

    monkeypatch.setattr(sigbus, "say_on_sigbus", lambda path, code: installed.append((path, code)))
    assert cli.main(["2", "--dataset", "files", "--data-dir", "set.npy", "--quiet", "--samples", "2"]) == 0
    assert installed == [(str(tmp_path / "set.npy"), 2)]
    installed.clear()
    np.savez(tmp_path / "set.npz", images=images)  # read into memory: nothing to guard
    assert cli.main(["2", "--dataset", "files", "--data-dir", "set.npz", "--quiet", "--samples", "2"]) == 0
    assert installed == []


CUT_DURING_RUN = textwrap.dedent(
    """
    import os, sys
    from kmeans_mnist import cli
    from kmeans_mnist.cli import fit

    real = fit.check_k_fits

    def check_then_cut(args, data):  # the images are loaded (mapped); the fit is about to read them
        real(args, data)
        os.truncate("set.npy", 4096)

    fit.check_k_fits = check_then_cut
    sys.exit(cli.main(sys.argv[1:]))
    """
)


@pytest.mark.skipif(not hasattr(os, "truncate") or sys.platform == "win32", reason="needs SIGBUS")
def test_a_run_whose_npy_is_cut_short_during_the_fit_ends_in_one_line(tmp_path):
    np.save(tmp_path / "set.npy", np.random.default_rng(0).integers(0, 256, (3000, 28, 28), dtype=np.uint8))
    (tmp_path / "run.py").write_text(CUT_DURING_RUN)
    env = isolated_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(cli.__file__).parents[2]), env.get("PYTHONPATH")])
    )
    args = ["3", "--dataset", "files", "--data-dir", "set.npy", "--output", "out", "--quiet"]
    result = subprocess.run(
        [sys.executable, "run.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    one_error_line(result, f"{tmp_path / 'set.npy'} was cut short by another program", "run again")
    assert not list((tmp_path / "out").rglob("model.npz"))  # nothing saved for the K in progress
