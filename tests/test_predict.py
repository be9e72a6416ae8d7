"""`predict` and the model file: one reader, one distance routine, safe outputs, bounded memory.

The model file has one home (results/model.py): the API's load_model and the command line's
predict read it alike. predict never writes over what it reads, writes into what is not a regular
file, streams its input, and survives models of extreme magnitude.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_support import fails_cleanly, isolated_env, random_images, run_cli, snapshot
from kmeans_mnist import ModelError, load_model
from kmeans_mnist.results import model as model_file
from kmeans_mnist.results import predict, run


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
    for module in (run, predict):
        assert not hasattr(module, "save_model") or module.save_model is model_file.save_model
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


# --- predict --output: never over its inputs, into what is not a file ---------------------------


def predict_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(["predict", MODEL, "mnist", "--data-dir", "data", *args], home)


@pytest.mark.parametrize("how", ["itself", "symbolic link", "hard link"])
@pytest.mark.parametrize("what", ["model", "data file"])
def test_predict_refuses_to_write_over_what_it_reads(home, what, how):
    original = home / (MODEL if what == "model" else "data/mnist_test.csv")
    target = {
        "itself": original,
        "symbolic link": home / "link.csv",
        "hard link": home / "hard.csv",
    }[how]
    if how == "symbolic link":
        target.symlink_to(original)
    elif how == "hard link":
        os.link(original, target)
    before = snapshot(home)
    fails_cleanly(predict_cli(home, "--output", str(target)), "--output", "which predict reads")
    assert snapshot(home) == before


def test_predict_refuses_to_write_over_the_npy_it_reads(home):
    images, _ = random_images(6, 3)
    np.save(home / "new.npy", images.reshape(6, -1))
    before = snapshot(home)
    fails_cleanly(run_cli(["predict", MODEL, "new.npy", "--output", "new.npy"], home), "which predict reads")
    assert snapshot(home) == before


def test_predict_writes_into_a_named_pipe_and_leaves_it_a_pipe(home):
    fifo = home / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    result = predict_cli(home, "--output", "pipe", "--quiet")
    received, _ = reader.communicate(timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.path.exists(fifo) and os.stat(fifo).st_mode & 0o170000 == 0o010000  # still a FIFO
    assert len(list(csv.DictReader(io.StringIO(received)))) == 40
    assert [name for name in os.listdir(home) if name.startswith(".")] == []


def test_predict_writes_into_a_device_through_a_link(home):
    (home / "sink").symlink_to("/dev/null")
    result = predict_cli(home, "--output", "sink")
    assert result.returncode == 0, result.stderr
    assert os.readlink(home / "sink") == "/dev/null" and os.path.exists("/dev/null")
    assert os.stat("/dev/null").st_mode & 0o170000 == 0o020000  # still a character device


def test_predict_dash_is_standard_output(home):
    result = predict_cli(home, "--output", "-")
    assert result.returncode == 0 and len(list(csv.DictReader(io.StringIO(result.stdout)))) == 40
    assert not (home / "-").exists()


def test_predict_through_a_link_to_a_file_replaces_the_file_not_the_link(home):
    (home / "results").mkdir()
    (home / "results" / "p.csv").write_text("old\n")
    (home / "p.csv").symlink_to("results/p.csv")
    result = predict_cli(home, "--output", "p.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    assert (home / "p.csv").is_symlink() and (home / "results/p.csv").read_text().startswith("index,")


def test_predict_with_standard_output_closed_is_one_error_line(home):
    command = f"{sys.executable} -m kmeans_mnist predict {MODEL} mnist --data-dir data >&-"
    result = subprocess.run(
        ["bash", "-c", command], cwd=home, env=isolated_env(home), capture_output=True, text=True, timeout=60
    )
    fails_cleanly(result, "standard output is closed", "--output")


def test_a_fit_with_standard_output_closed_writes_its_results(home):
    command = f"{sys.executable} -m kmeans_mnist 3 --data-dir data --output fit --samples 0 >&-"
    result = subprocess.run(
        ["bash", "-c", command], cwd=home, env=isolated_env(home), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert list((home / "fit").glob("*/k3/model.npz"))


# --- predict --output and Ctrl-C --------------------------------------------------------------------


def hidden(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


@pytest.fixture
def in_home(home, monkeypatch):
    monkeypatch.chdir(home)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "parsed-cache"))
    return home


@pytest.mark.parametrize("stage", ["creating", "writing", "importing"])
def test_an_interrupt_before_the_rename_leaves_the_old_file_and_no_temporary(
    in_home, monkeypatch, capsys, stage
):
    from kmeans_mnist import cli

    (in_home / "p.csv").write_text("old\n")
    if stage == "creating":  # the temporary file exists, its descriptor not yet returned
        real_open = os.open

        def interrupted_open(path, *args, **kwargs):
            descriptor = real_open(path, *args, **kwargs)
            if ".p.csv.tmp-" not in str(path):
                return descriptor
            raise KeyboardInterrupt

        monkeypatch.setattr(predict.os, "open", interrupted_open)
    elif stage == "importing":  # a real Ctrl-C that NumPy's C start-up reports as an ImportError
        import signal

        def interrupted_import(*args):
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                raise ImportError('PyCapsule_Import could not import module "datetime"') from None

        monkeypatch.setattr(predict, "read_model", interrupted_import)
    else:

        def interrupted_rows(*args):
            raise KeyboardInterrupt

        monkeypatch.setattr(predict, "_write_rows", interrupted_rows)
    code = cli.main(["predict", MODEL, "mnist", "--data-dir", "data", "--output", "p.csv"])
    monkeypatch.undo()
    assert code == 130
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["interrupted: p.csv was not written (a file that was there is unchanged)"]
    assert (in_home / "p.csv").read_text() == "old\n" and hidden(in_home) == []


def test_an_interrupt_during_the_rename_says_the_file_was_written(in_home, monkeypatch, capsys):
    """A real SIGINT arriving as the rename ends: the file is new, and the line says so."""
    import signal

    from kmeans_mnist import cli

    (in_home / "p.csv").write_text("old\n")
    real_replace = os.replace

    def replace_then_interrupt(source, target):
        real_replace(source, target)
        if Path(target).name == "p.csv":  # not the parsed-data cache's own renames
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(predict.os, "replace", replace_then_interrupt)
    code = cli.main(["predict", MODEL, "mnist", "--data-dir", "data", "--output", "p.csv"])
    monkeypatch.undo()
    assert code == 130
    assert capsys.readouterr().err.splitlines() == [
        "interrupted: the predictions were written to p.csv before the interrupt"
    ]
    assert (in_home / "p.csv").read_text().startswith("index,") and hidden(in_home) == []


# --- predict streams its input ------------------------------------------------------------------


def peak_rss_bytes(code: str, cwd: Path) -> int:
    """The peak resident memory of a fresh Python running `code` (ru_maxrss of the child)."""
    probe = (
        "import resource, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {code!r}], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = isolated_env(cwd)
    result = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1]) * 1024


def test_predict_memory_stays_near_the_size_of_its_input(home):
    """60,000 uint8 images (47 MB): a float32 copy would add 188 MB; blocks add a fixed amount."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60_000, 784), dtype=np.uint8)
    np.save(home / "big.npy", images)
    imports = "from kmeans_mnist import cli; from kmeans_mnist.cli import sweep; from kmeans_mnist.engine import lloyd"
    baseline = peak_rss_bytes(imports, home)
    run = f"{imports}; sys_exit = cli.main(['predict', {MODEL!r}, 'big.npy', '--output', 'p.csv', '--quiet'])"
    peak = peak_rss_bytes(run, home)
    assert (home / "p.csv").stat().st_size > 0
    # The input (memory-mapped, read once) plus blocks of a fixed size (about 30 MB measured:
    # converted rows, their float64 norms, a block of CSV text), not 4 bytes a value more.
    assert peak - baseline < images.nbytes + 40 * 2**20, (peak - baseline) / 2**20


def test_labels_distances_are_the_nearest_centres_and_their_distances():
    from kmeans_mnist.engine import lloyd

    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 20)) * 50
    centers = rng.normal(size=(7, 20)) * 50
    labels, distances = lloyd.labels_distances(X, centers)
    exact = np.sqrt(((X[:, None, :] - centers[None]) ** 2).sum(axis=2))
    assert np.array_equal(labels, exact.argmin(axis=1))
    assert np.array_equal(labels, lloyd.labels_inertia(X, centers)[0])
    np.testing.assert_allclose(distances, exact.min(axis=1), rtol=1e-6)


# --- models of extreme magnitude -------------------------------------------------------------------


def extreme_model(home: Path, centers: np.ndarray) -> str:
    from types import SimpleNamespace

    fitted = SimpleNamespace(cluster_centers_=centers, inertia_=1.0, n_iter_=1, converged_=True)
    model_file.save_model(home / "extreme.npz", fitted, image_shape=(28, 28))
    return "extreme.npz"


@pytest.mark.parametrize("magnitude", [1e300, 1e10, 1e-10])
def test_predict_with_centres_of_any_one_magnitude_finds_the_nearest(home, magnitude):
    """Huge centres once divided by zero (scale**2 underflowed); centres of one magnitude, however
    far from the pixels', now give the nearest centre and its distance."""
    rng = np.random.default_rng(2)
    centers = rng.uniform(-1, 1, (3, 784)) * magnitude
    centers[1] += 2 * magnitude  # each centre its own place
    centers[2] -= 2 * magnitude
    images = rng.integers(0, 256, (8, 784), dtype=np.uint8)
    np.save(home / "new.npy", images)
    result = run_cli(["predict", extreme_model(home, centers), "new.npy"], home)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    unit = max(magnitude, 255.0)  # float64 differences in units where nothing overflows
    exact = np.sqrt(((images[:, None, :] / unit - centers[None] / unit) ** 2).sum(axis=2)) * unit
    assert [int(row["cluster"]) - 1 for row in rows] == exact.argmin(axis=1).tolist()
    np.testing.assert_allclose([float(row["distance"]) for row in rows], exact.min(axis=1), rtol=1e-5)


def test_predict_refuses_centres_too_far_apart_in_magnitude(home):
    centers = np.random.default_rng(3).uniform(0, 255, (3, 784))
    centers[0, 0] = 1.7e308  # finite, but 2^1000 beyond the others: they would all round to 0
    fails_cleanly(
        run_cli(["predict", extreme_model(home, centers), "mnist", "--data-dir", "data"], home),
        "cannot assign",
        "magnitudes",
    )


def test_ctrl_c_at_any_moment_of_predict_leaves_a_whole_file_and_true_words(home):
    """A real SIGINT at moments spread over a whole predict (timed first): the file is the old
    one or the whole new one, no temporary file stays, and the line says which."""
    rng = np.random.default_rng(5)
    np.save(home / "many.npy", rng.integers(0, 256, (60_000, 784), dtype=np.uint8))
    env = isolated_env(home)
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "kmeans_mnist", "predict", MODEL, "many.npy", "--output", "p.csv"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    started = time.monotonic()
    assert start().wait(timeout=120) == 0
    whole = time.monotonic() - started
    outcomes = []  # (fraction, exit code, stderr)
    for fraction in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 1.0):
        (home / "p.csv").write_text("old\n")
        process = start()
        time.sleep(fraction * whole)
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=120)[1]
        content = (home / "p.csv").read_text()
        outcomes.append((fraction, process.returncode, err.strip()))
        assert hidden(home) == [], outcomes
        if process.returncode == 0:  # finished before the signal
            assert err.startswith("assigned "), outcomes
        elif process.returncode == -signal.SIGINT and (err == "" or err.startswith("assigned ")):
            # before Python set up its handler (nothing done), or after the tool returned, while the
            # interpreter shut down (everything done): either way the file is old or whole
            assert err or content == "old\n", outcomes
        elif process.returncode in (1, -signal.SIGINT):
            # in Python's own start-up (site, runpy), before any module of the tool ran: Python's
            # traceback, and nothing done
            assert "kmeans_mnist" not in err and content == "old\n", outcomes
        else:
            assert process.returncode == 130, outcomes
            [line] = err.splitlines()
            if "was not written" in line or line == "interrupted: nothing was written":
                assert content == "old\n", outcomes
            else:
                assert line == "interrupted: the predictions were written to p.csv before the interrupt", (
                    outcomes
                )
        if content != "old\n":
            assert content.startswith("index,") and content.count("\n") == 60_001, outcomes  # whole
