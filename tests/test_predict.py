"""`predict` and the model file: one reader, one distance routine, safe outputs, bounded memory.

The model file has one home (results/model.py): the API's load_model and the command line's
predict read it alike. predict never writes over what it reads, writes into what is not a regular
file, streams its input, and survives models of extreme magnitude.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cli_support import run_cli, write_kaggle
from kmeans_mnist import ModelError, load_model
from kmeans_mnist.results import model as model_file
from kmeans_mnist.results import predict, run


def fails_cleanly(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def model_home(tmp_path_factory) -> Path:
    """data/ (small MNIST CSV files) and out/mnist/k4/ fitted on them (made once)."""
    home = tmp_path_factory.mktemp("predict-home")
    write_kaggle(home / "data", n_train=30, n_test=10)
    result = run_cli(["4", "--data-dir", "data", "--samples", "0", "--output", "out", "--quiet"], home)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(home / "parsed-cache")
    return home


@pytest.fixture
def home(tmp_path, model_home) -> Path:
    shutil.copytree(model_home, tmp_path, dirs_exist_ok=True)
    return tmp_path


MODEL = "out/mnist/k4/model.npz"


# --- one model module ----------------------------------------------------------------------------


def test_the_model_file_has_one_home():
    """The package's load_model and ModelError, the run's writer and predict's reader are one module's."""
    import kmeans_mnist

    assert (
        kmeans_mnist.load_model is model_file.load_model and kmeans_mnist.ModelError is model_file.ModelError
    )
    assert run.save_model is model_file.save_model
    for module in (run, predict):
        assert (
            not hasattr(module, "MODEL_FORMAT_VERSION")
            or module.MODEL_FORMAT_VERSION is model_file.MODEL_FORMAT_VERSION
        )


def write_version_one_by_hand(path: Path, centers: np.ndarray, **extra) -> Path:
    """A model file laid out as format 1 has always been written (the keys np.savez stored)."""
    with open(path, "wb") as file:
        np.savez(
            file,
            cluster_centers=centers,
            format_version=1,
            k=len(centers),
            inertia=12.5,
            n_iter=3,
            converged=True,
            **extra,
        )
    return path


def test_a_format_one_file_loads_in_the_api_and_in_predict(home):
    centers = np.random.default_rng(0).uniform(0, 255, (4, 784))
    path = write_version_one_by_hand(
        home / "v1.npz", centers, image_shape=np.array([28, 28]), dataset="mnist"
    )
    loaded = load_model(path)
    assert (
        np.array_equal(loaded.cluster_centers_, centers) and loaded.inertia_ == 12.5 and loaded.n_iter_ == 3
    )
    saved = predict.read_model(path)
    assert np.array_equal(saved.centers, centers) and saved.image_shape == (28, 28)
    result = run_cli(["predict", "v1.npz", "mnist", "--data-dir", "data"], home)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    expected = load_model(path).predict(np.asarray(_images(home), dtype=np.float64)) + 1
    assert [int(row["cluster"]) for row in rows] == expected.tolist()


def _images(home: Path) -> np.ndarray:
    from kmeans_mnist import load_dataset

    return load_dataset("mnist", data_dir=home / "data", keep_blank=True).all_pixel


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"format_version": 2}, "format 2"),
        ({"cluster_centers": np.full((2, 784), np.nan)}, "NaN"),
        ({"inertia": None}, "no inertia"),
        ({"image_shape": np.array([27, 28])}, "image_shape"),
    ],
    ids=["future format", "nan centres", "no inertia", "wrong shape"],
)
def test_the_api_and_predict_refuse_a_bad_model_alike(home, change, fragment):
    arrays = dict(np.load(home / MODEL))
    arrays.update(change)
    with open(home / "bad.npz", "wb") as file:
        np.savez(file, **{name: value for name, value in arrays.items() if value is not None})
    with pytest.raises(ModelError) as caught:
        load_model(home / "bad.npz")
    assert fragment in str(caught.value) and "bad.npz" in str(caught.value)
    fails_cleanly(run_cli(["predict", "bad.npz", "mnist", "--data-dir", "data"], home), fragment, "bad.npz")


def test_predict_on_the_fitted_images_writes_the_fits_distances(home):
    """One distance routine: predict's text equals assignments.csv's, digit for digit."""
    result = run_cli(["predict", MODEL, "mnist", "--data-dir", "data"], home)
    assert result.returncode == 0, result.stderr
    predicted = list(csv.DictReader(io.StringIO(result.stdout)))
    with open(home / "out/mnist/k4/assignments.csv", newline="") as file:
        fitted = list(csv.DictReader(file))
    assert len(predicted) == len(fitted) == 40
    for column in ("index", "label", "cluster", "distance"):
        assert [row[column] for row in predicted] == [row[column] for row in fitted], column
