"""Own images through load_dataset("files", ...): folders of images, IDX, .npy/.npz and generic CSV files."""

import gzip
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist.data import sources
from kmeans_mnist.data.datasets import Dataset, DatasetError, load_dataset


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def digits(count: int, seed: int = 0, side: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """count side x side uint8 images, none all black, and labels 0..2."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, side, side), dtype=np.uint8)
    images[:, side // 2, side // 2] = 200
    return images, rng.permutation(np.arange(count) % 3).astype(np.int64)


def files(path, **options) -> Dataset:
    return load_dataset("files", data_dir=path, keep_blank=True, **options)


def refused(path, *fragments, **options) -> str:
    """The message of the DatasetError that loading path raises; it names the path and the fragments."""
    with pytest.raises(DatasetError) as raised:
        files(path, **options)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- a folder of images --------------------------------------------------------------------------


def write_class_folders(root: Path, images, labels, names=("cat", "dog", "emu"), suffix=".png") -> Path:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:03d}{suffix}")
    return root


def test_class_folders_give_labels_and_class_names(tmp_path):
    images, labels = digits(30)
    root = write_class_folders(tmp_path / "Pets Photos", images, labels)
    (root / "notes.txt").write_text("not an image: ignored")
    (root / "cat" / ".hidden.png").write_bytes(b"ignored too")
    data = files(root)
    assert data.name == "pets-photos" and data.image_shape == (12, 12) and len(data) == 30
    assert data.class_names == {0: "cat", 1: "dog", 2: "emu"}
    order = np.argsort(labels, kind="stable")  # class by class, files sorted by name
    np.testing.assert_array_equal(data.labels, labels[order])
    np.testing.assert_array_equal(data.images, images[order])
    assert "3 class folders" in data.source


def test_flat_folder_has_no_labels_and_colour_stays_colour_unless_grey(tmp_path):
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    for index, image in enumerate(colour):
        Image.fromarray(image).save(tmp_path / f"img{index}.bmp")
    data = files(tmp_path)
    assert data.labels is None and data.class_names is None and data.image_shape == (9, 7)
    assert data.channels == 3 and data.all_pixel.shape == (4, 9 * 7 * 3) and not data.converted_to_grey
    np.testing.assert_array_equal(data.images, colour)
    assert list(data.paths) == [f"img{index}.bmp" for index in range(4)]
    grey = files(tmp_path, grey=True)
    expected = [np.array(Image.fromarray(image).convert("L")) for image in colour]
    np.testing.assert_array_equal(grey.images, np.stack(expected))
    assert grey.channels == 1 and grey.converted_to_grey


def test_mixed_sizes_are_refused_unless_resized(tmp_path):
    images, labels = digits(6)
    root = write_class_folders(tmp_path / "mixed", images, labels)
    odd = root / "dog" / "zz-big.png"
    Image.fromarray(np.full((20, 16), 9, dtype=np.uint8)).save(odd)
    refused(root, "differ in size (HxW)", "6 of 7 are 12x12", str(odd), "is 20x16", "--size 12x12")
    data = files(root, size=(8, 10))
    assert data.image_shape == (8, 10) and len(data) == 7


@pytest.mark.parametrize(
    "content", [b"", b"not a picture", b"\x89PNG\r\n\x1a\n truncated"], ids=["empty", "text", "cut"]
)
def test_a_corrupt_image_is_refused_or_skipped_and_counted(tmp_path, content):
    images, labels = digits(5)
    root = write_class_folders(tmp_path / "photos", images, labels)
    bad = root / "cat" / "broken.png"
    bad.write_bytes(content)
    refused(root, str(bad), "--skip-unreadable")
    data = files(root, skip_unreadable=True)
    assert len(data) == 5 and data.n_unreadable_skipped == 1
    assert "1 unreadable skipped" in repr(data)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "empty", "is empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello")
    refused(tmp_path / "text", "holds no image files")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"no")
    refused(tmp_path / "broken", "no readable image", skip_unreadable=True)
    both = write_class_folders(tmp_path / "both", *digits(3))
    Image.fromarray(digits(1)[0][0]).save(both / "loose.png")
    refused(both, "both at its top", "loose.png")
    refused(tmp_path / "nowhere", "nowhere", "does not exist")
    Image.fromarray(digits(1)[0][0]).save(tmp_path / "one.png")
    refused(tmp_path / "one.png", "is one image", "folder")


def test_options_that_do_not_apply_are_refused(tmp_path):
    root = write_class_folders(tmp_path / "pets", *digits(3))
    refused(root, "--shape does not apply", shape=(3, 4))
    refused(root, "--split does not apply", split="train")
    np.save(tmp_path / "a.npy", digits(3)[0])
    refused(tmp_path / "a.npy", "--size does not apply", size=(4, 4))
    with pytest.raises(DatasetError, match="applies only to your own files"):
        load_dataset("mnist", size=(4, 4))
    with pytest.raises(DatasetError, match="needs data_dir"):
        load_dataset("files")


def test_decompression_bomb_is_one_error_and_no_warning(tmp_path, monkeypatch, recwarn):
    root = write_class_folders(tmp_path / "bombs", *digits(3))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # a 12x12 image (144 px) is then over twice the limit
    message = refused(root, "decompression-bomb limit", str(root / "cat"))
    assert "100" in message
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # between the limit and twice it: Pillow only warns
    assert len(files(root)) == 3
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_named_pipe_among_or_instead_of_the_files_never_hangs(tmp_path):
    root = write_class_folders(tmp_path / "pets", *digits(4))
    os.mkfifo(root / "cat" / "pipe.png")
    os.mkfifo(tmp_path / "pipe.npy")
    result = {}

    def load():
        with pytest.raises(DatasetError, match=r"cat/pipe.png is a named pipe \(FIFO\), not a regular file"):
            files(root)
        result["pets"] = len(files(root, skip_unreadable=True))
        with pytest.raises(DatasetError, match="named pipe"):
            files(tmp_path / "pipe.npy")
        result["done"] = True

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(30)
    assert result == {"pets": 4, "done": True}


# --- IDX files -----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(folder: Path, prefix: str, images, labels, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for kind, code, array in (("images-idx3", 0x08, images), ("labels-idx1", 0x08, labels.astype(np.uint8))):
        data = idx_bytes(array, code)
        path = folder / f"{prefix}-{kind}-ubyte"
        if gz:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, compresslevel=1))
        else:
            path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_folder_train_then_test_with_labels(tmp_path, gz):
    train, test = digits(20, 1), digits(8, 2)
    write_idx(tmp_path / "mnist", "train", *train, gz)
    write_idx(tmp_path / "mnist", "t10k", *test, gz)
    data = files(tmp_path / "mnist")
    assert data.name == "mnist-idx"  # never the output folder of the named dataset
    np.testing.assert_array_equal(data.images, np.concatenate([train[0], test[0]]))
    np.testing.assert_array_equal(data.labels, np.concatenate([train[1], test[1]]))
    only_test = files(tmp_path / "mnist", split="test")
    np.testing.assert_array_equal(only_test.images, test[0])
    one_file = files(tmp_path / "mnist" / f"t10k-images-idx3-ubyte{'.gz' if gz else ''}")
    np.testing.assert_array_equal(one_file.labels, test[1])
    if not gz:  # an uncompressed IDX file is mapped, not read
        mapped = files(tmp_path / "mnist", split="train").images
        assert isinstance(mapped, np.memmap) or isinstance(mapped.base, np.memmap)


def test_idx_errors(tmp_path):
    images, labels = digits(10)
    write_idx(tmp_path / "a", "train", images, labels[:9], gz=False)
    refused(tmp_path / "a", "train-labels-idx1-ubyte", "9 labels for the 10 images")
    write_idx(tmp_path / "b", "train", images, labels, gz=False)
    path = tmp_path / "b" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    refused(tmp_path / "b", str(path), "cut off")
    write_idx(tmp_path / "c", "train", images, labels, gz=True)
    gz_path = tmp_path / "c" / "train-images-idx3-ubyte.gz"
    gz_path.write_bytes(gz_path.read_bytes()[:-20])
    refused(tmp_path / "c", str(gz_path))
    refused(tmp_path / "c", "no test images", split="test")
    write_idx(tmp_path / "d", "train", images, labels, gz=False)
    write_idx(tmp_path / "d", "t10k", images, labels, gz=False)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    refused(tmp_path / "d", "t10k-images-idx3-ubyte", "no labels file")
    assert files(tmp_path / "d", split="train").labels is not None


# --- NumPy files ---------------------------------------------------------------------------------


def test_npy_is_memory_mapped_never_copied(tmp_path):
    images, _ = digits(50)
    images[7] = 0  # one blank image: skipping it copies, keeping it does not
    np.save(tmp_path / "Big Set.npy", images)
    data = files(tmp_path / "Big Set.npy")
    assert data.name == "big-set" and data.labels is None
    assert isinstance(data.images, np.memmap) or isinstance(data.images.base, np.memmap)
    np.testing.assert_array_equal(data.images, images)
    limited = load_dataset("files", data_dir=tmp_path / "Big Set.npy", limit=5)
    assert len(limited) == 5


def test_npy_flat_rows_and_conversions(tmp_path):
    images, _ = digits(6, side=4)
    np.save(tmp_path / "square.npy", images.reshape(6, 16))
    np.testing.assert_array_equal(files(tmp_path / "square.npy").images, images)
    wide = np.arange(24, dtype=np.uint8).reshape(2, 12)
    np.save(tmp_path / "wide.npy", wide)
    refused(tmp_path / "wide.npy", "12 values", "--shape")
    np.testing.assert_array_equal(files(tmp_path / "wide.npy", shape=(3, 4)).images, wide.reshape(2, 3, 4))
    refused(tmp_path / "wide.npy", "not 5x5", shape=(5, 5))
    np.save(tmp_path / "unit.npy", images.astype(np.float32) / 255)
    np.testing.assert_array_equal(files(tmp_path / "unit.npy").images, images)
    np.save(tmp_path / "ints.npy", images.astype(np.int64))
    np.testing.assert_array_equal(files(tmp_path / "ints.npy").images, images)
    np.save(tmp_path / "big.npy", images.astype(np.int64) * 10)
    refused(tmp_path / "big.npy", "0..255")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused(tmp_path / "objects.npy", "Python objects")
    np.save(tmp_path / "rgba.npy", np.zeros((2, 4, 4, 4), dtype=np.uint8))
    refused(tmp_path / "rgba.npy", "N x H x W x 3")
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    refused(tmp_path / "garbage.npy", "garbage.npy")


def test_npz_by_key(tmp_path):
    images, labels = digits(9)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    data = files(tmp_path / "set.npz")
    np.testing.assert_array_equal(data.labels, labels)
    np.savez(
        tmp_path / "keras.npz", x_train=images[:6], y_train=labels[:6], x_test=images[6:], y_test=labels[6:]
    )
    np.testing.assert_array_equal(files(tmp_path / "keras.npz").images, images)
    np.testing.assert_array_equal(files(tmp_path / "keras.npz", split="test").labels, labels[6:])
    np.savez(tmp_path / "odd.npz", pics=images, names=np.array(["b", "a", "c"])[labels])
    refused(tmp_path / "odd.npz", "no 'images' array", "'pics', 'names'", "--keys")
    named = files(tmp_path / "odd.npz", keys=("pics", "names"))
    assert named.class_names == {0: "a", 1: "b", 2: "c"}
    np.testing.assert_array_equal(named.labels, np.array([1, 0, 2])[labels])
    refused(tmp_path / "odd.npz", "no array 'nope'", keys=("nope", None))
    np.savez(tmp_path / "short.npz", images=images, labels=labels[:4])
    refused(tmp_path / "short.npz", "4 labels for the 9 images")


# --- a generic CSV -------------------------------------------------------------------------------


def csv_text(images, labels=None, header: str | None = None) -> bytes:
    rows = [header] if header else []
    for index, image in enumerate(images):
        values = ([int(labels[index])] if labels is not None else []) + image.ravel().tolist()
        rows.append(",".join(map(str, values)))
    return ("\n".join(rows) + "\n").encode()


@pytest.mark.parametrize("header", [None, "label,p1,p2,..."], ids=["no-header", "header"])
def test_csv_labels_inferred_from_a_square(tmp_path, header):
    images, labels = digits(7, side=5)
    (tmp_path / "emnist-like.csv").write_bytes(csv_text(images, labels + 20, header))
    data = files(tmp_path / "emnist-like.csv")
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels + 20)
    (tmp_path / "pixels.csv").write_bytes(csv_text(images))
    assert files(tmp_path / "pixels.csv").labels is None


def test_csv_shape_and_errors(tmp_path):
    images, labels = digits(3, side=4)
    wide = images.reshape(3, 16)[:, :12].reshape(3, 2, 6)
    (tmp_path / "wide.csv").write_bytes(csv_text(wide, labels))
    refused(tmp_path / "wide.csv", "13 fields", "not a square", "--shape")
    np.testing.assert_array_equal(files(tmp_path / "wide.csv", shape=(2, 6)).images, wide)
    refused(tmp_path / "wide.csv", "--shape 3x3", shape=(3, 3))
    (tmp_path / "bad.csv").write_bytes(csv_text(images, labels) + b"1,2,x\n")
    refused(tmp_path / "bad.csv", "bad.csv line 4")


def test_csv_parse_is_cached_and_checked(tmp_path, monkeypatch):
    images, labels = digits(5, side=3)
    path = tmp_path / "small.csv"
    path.write_bytes(csv_text(images, labels))
    files(path)
    from kmeans_mnist.data import csvparse

    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(csvparse, "parse_pixel_csv", no_parse)
    np.testing.assert_array_equal(files(path).labels, labels)


def test_repr_is_short(tmp_path):
    images, labels = digits(40)
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    text = repr(files(tmp_path / "set.npz"))
    assert text.startswith("Dataset('set': 40 images of 12x12 uint8, labels") and len(text) < 200
    assert "[" not in text  # no array in it


def test_slug():
    assert sources.slug(Path("/x/My Digits v2"), "images") == "my-digits-v2"
    assert sources.slug(Path("/x/usps"), "images") == "usps-images"
    assert sources.slug(Path("/x/emnist-letters-train.csv"), "csv") == "emnist-letters-train"
    assert sources.slug(Path("/x/.."), "images") != ""
