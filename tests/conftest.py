"""Shared fixtures: where the real data lives, and a kagglehub cache built from it."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


SHARED_SKIP = (
    "real-data test: needs the data folder ../shared/datasets beside the project "
    "(see docs/development.md); the rest of the suite uses data it makes itself"
)


def have_shared() -> bool:
    return (SHARED_DATASETS / "make_kaggle_cache.py").is_file()


def pytest_configure(config):
    """Ctrl-C as a terminal delivers it, even when pytest was started with SIGINT ignored.

    A shell without job control starts background commands (`pytest &`, CI steps run that way)
    with SIGINT ignored, and Python keeps an ignored SIGINT ignored; the subprocesses inherit it.
    The interrupt tests would then test nothing but that; Python's own handler (reset to the
    default on exec) gives them, and every command they start, the interactive behaviour.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


needs_shared = pytest.mark.skipif(not have_shared(), reason=SHARED_SKIP)


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data folder, or skip."""
    if not have_shared():
        pytest.skip(SHARED_SKIP)
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def kaggle_cache(shared_datasets, tmp_path_factory) -> Path:
    """A kagglehub cache folder holding the pinned Kaggle versions (built once per session).

    Reuses $KMEANS_MNIST_TEST_KAGGLE_CACHE when it points at an already built cache.
    """
    ready = os.environ.get("KMEANS_MNIST_TEST_KAGGLE_CACHE")
    if ready and Path(ready).is_dir():
        return Path(ready)
    cache = tmp_path_factory.mktemp("kagglehub")
    subprocess.run(
        [sys.executable, str(shared_datasets / "make_kaggle_cache.py"), str(cache)],
        check=True,
        capture_output=True,
    )
    return cache


@pytest.fixture
def real_kaggle(kaggle_cache, monkeypatch, tmp_path) -> Path:
    """KAGGLEHUB_CACHE pointed at the real cache; parsed-data cache isolated in tmp_path."""
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(kaggle_cache))
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    return kaggle_cache


def read_idx_images(path: Path):
    """Images of an IDX archive (gzip) as an N x 784 uint8 array: test data without the loader."""
    import gzip

    import numpy as np

    data = gzip.decompress(path.read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 784)


@pytest.fixture(scope="session")
def mnist_pixels(shared_datasets):
    """The 60,000 real MNIST training images, N x 784 uint8 (skips without ../shared)."""
    return read_idx_images(shared_datasets / "mnist" / "train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def model_home(tmp_path_factory) -> Path:
    """A folder holding data/ (small MNIST CSV files) and out/mnist/k4/ fitted on them (made once
    per test module: the predict tests copy it)."""
    from cli_support import run_cli, write_kaggle

    home = tmp_path_factory.mktemp("model-home")
    write_kaggle(home / "data", n_train=30, n_test=10)
    result = run_cli(["4", "--data-dir", "data", "--samples", "0", "--output", "out", "--quiet"], home)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(home / "parsed-cache")
    return home
