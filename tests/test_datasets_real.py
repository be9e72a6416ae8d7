"""The loader on the real data, through the real kagglehub (offline, from a cache built from ../shared)."""

import gzip
import time

import numpy as np

from kmeans_mnist.data.datasets import load_dataset


def read_idx(path) -> np.ndarray:
    """An IDX archive's array (uint8 data only, as MNIST's are)."""
    data = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def test_mnist_through_kagglehub_then_from_the_cache(real_kaggle, shared_datasets):
    data = load_dataset("mnist")
    assert len(data) == 70_000 and data.n_blank_skipped == 0
    assert data.image_shape == (28, 28) and data.all_pixel.shape == (70_000, 784)
    assert sorted(np.unique(data.labels)) == list(range(10))
    assert "oddrationale/mnist-in-csv/versions/2" in data.source
    # the CSV files hold exactly the original archives, in their order
    np.testing.assert_array_equal(
        data.images[:60_000], read_idx(shared_datasets / "mnist/train-images-idx3-ubyte.gz")
    )
    np.testing.assert_array_equal(
        data.labels[60_000:], read_idx(shared_datasets / "mnist/t10k-labels-idx1-ubyte.gz")
    )

    started = time.perf_counter()
    again = load_dataset("mnist")
    assert time.perf_counter() - started < 0.5
    np.testing.assert_array_equal(again.images, data.images)

    train = load_dataset("mnist", split="train")
    test = load_dataset("mnist", split="test")
    assert (len(train), len(test)) == (60_000, 10_000)
    np.testing.assert_array_equal(test.labels, data.labels[60_000:])


def test_fashion_through_kagglehub(real_kaggle):
    data = load_dataset("fashion")
    assert len(data) == 70_000 and data.image_shape == (28, 28)
    np.testing.assert_array_equal(np.bincount(data.labels), [7_000] * 10)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert "zalando-research/fashionmnist/versions/4" in data.source


def test_usps_sheets(shared_datasets):
    data = load_dataset("usps", data_dir=shared_datasets / "usps-sheets")
    assert len(data) == 5_500 and data.image_shape == (16, 16)
    assert data.n_blank_skipped == 110
    np.testing.assert_array_equal(np.bincount(data.labels, minlength=6), [0] + [1_100] * 5)
