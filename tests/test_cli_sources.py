"""The command line on own images, on an installed wheel, with the user cache folder, and `predict`."""

from __future__ import annotations

import csv
import gzip
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import fails_cleanly, isolated_env, random_images, run_cli, snapshot, write_kaggle
from conftest import ROOT, read_idx_images

N_CLASSES, PER_CLASS = 3, 15


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kmeans_mnist", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_class_pngs(root: Path, side: int = 10) -> Path:
    """N_CLASSES sub-folders of PER_CLASS PNGs; each class a bright bar in its own place, plus noise."""
    rng = np.random.default_rng(4)
    for label in range(N_CLASSES):
        folder = root / f"class-{'abc'[label]}"
        folder.mkdir(parents=True)
        for index in range(PER_CLASS):
            image = rng.integers(0, 40, (side, side), dtype=np.uint8)
            image[:, 3 * label : 3 * label + 3] = 230
            Image.fromarray(image).save(folder / f"{index:02d}.png")
    return root


def summaries(folder: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in folder.glob("k*/summary.json")}


# --- a folder of images ----------------------------------------------------------------------------


def test_folder_of_class_pngs_clusters_with_metrics(tmp_path):
    write_class_pngs(tmp_path / "My Shapes")
    result = run_cli(["3", "--dataset", "files", "--data-dir", "My Shapes", "--output", "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"loaded {N_CLASSES * PER_CLASS} images of 10x10" in result.stderr
    [saved] = summaries(tmp_path / "out" / "my-shapes").values()
    assert saved["n_samples"] == N_CLASSES * PER_CLASS and saved["image_shape"] == [10, 10]
    assert saved["metrics"]["accuracy"] == 1.0  # three bars apart: K-means finds them
    assert saved["confusion"]["classes"] == ["class-a", "class-b", "class-c"]
    with open(tmp_path / "out" / "my-shapes" / "k3" / "assignments.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted({row["label"] for row in rows}) == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("args", "setup", "fragments"),
    [
        (["--dataset", "files"], None, ["--dataset files needs --data-dir"]),
        (["--dataset", "files", "--data-dir", "empty"], "empty", ["empty", "is empty"]),
        (["--dataset", "files", "--data-dir", "pics"], "corrupt", ["broken.png", "--skip-unreadable"]),
        (["--dataset", "files", "--data-dir", "pics"], "mixed", ["differ in size", "--size 10x10"]),
        (["--dataset", "files", "--data-dir", "pics", "--size", "ten"], "corrupt", ["--size wants HxW"]),
        (["--data-dir", "pics", "--shape", "3x4"], None, ["--shape applies only to your own files"]),
        (["--dataset", "files", "--data-dir", "pics", "--keys", "a,b,c"], "mixed", ["--keys wants"]),
        (["--dataset", "files", "--data-dir", "set.npz"], "npz", ["no 'images' array", "--keys"]),
        (["--dataset", "files", "--data-dir", "rows.csv"], "csv", ["rows.csv", "not a square", "--shape"]),
    ],
    ids=[
        "no-data-dir",
        "empty",
        "corrupt",
        "mixed-sizes",
        "bad-size",
        "shape-for-mnist",
        "bad-keys",
        "npz-key",
        "csv",
    ],
)
def test_bad_own_files_fail_with_one_line_and_write_nothing(tmp_path, args, setup, fragments):
    if setup == "empty":
        (tmp_path / "empty").mkdir()
    elif setup in ("corrupt", "mixed"):
        write_class_pngs(tmp_path / "pics")
        if setup == "corrupt":
            (tmp_path / "pics" / "class-b" / "broken.png").write_bytes(b"\x89PNG\r\n")
        else:
            Image.fromarray(np.zeros((12, 10), dtype=np.uint8)).save(
                tmp_path / "pics" / "class-a" / "odd.png"
            )
    elif setup == "npz":
        np.savez(tmp_path / "set.npz", a=np.zeros((3, 4, 4)), b=np.zeros(3))
    elif setup == "csv":
        (tmp_path / "rows.csv").write_text("1,2,3\n4,5,6\n")
    before = snapshot(tmp_path)
    fails_cleanly(run_cli(["3", *args, "--output", "out"], tmp_path), *fragments)
    assert snapshot(tmp_path) == before


def test_skip_unreadable_counts_what_it_skipped(tmp_path):
    write_class_pngs(tmp_path / "pics")
    (tmp_path / "pics" / "class-b" / "broken.png").write_bytes(b"\x89PNG\r\n")
    result = run_cli(
        ["3", "--dataset", "files", "--data-dir", "pics", "--skip-unreadable", "--output", "out"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "1 unreadable files skipped" in result.stderr


# --- the wheel, the packaged sheets, the cache folder ------------------------------------------


def test_wheel_ships_the_usps_sheets(tmp_path):
    """Built as a wheel and installed (no editable path): --dataset usps needs no --data-dir."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "src"), str(source / "src")], check=True)
    isolation = (
        [] if int(importlib.metadata.version("setuptools").split(".")[0]) < 77 else ["--no-build-isolation"]
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", *isolation, "-w", str(tmp_path / "dist"), str(source)], check=True
    )
    [wheel] = (tmp_path / "dist").glob("kmeans_mnist-*.whl")
    target = tmp_path / "installed"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)], check=True
    )
    assert sorted(path.name for path in (target / "kmeans_mnist" / "data" / "usps").iterdir()) == [
        "LICENSE",
        *(f"usps_{digit}.jpg" for digit in range(1, 6)),
    ]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = isolated_env(elsewhere)
    env["PYTHONPATH"] = str(target)
    found = subprocess.run(
        [sys.executable, "-c", "import kmeans_mnist; print(kmeans_mnist.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip().startswith(str(target))
    result = run(["3", "4", "5", "6", "7", "--dataset", "usps", "--samples", "0"], elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert "loaded 5,500 images of 16x16 from the sheets shipped with kmeans-mnist" in result.stderr
    saved = summaries(elsewhere / "output" / "usps")
    assert sorted(saved) == ["k3", "k4", "k5", "k6", "k7"]
    assert {summary["n_samples"] for summary in saved.values()} == {5_500}
    assert all("accuracy" in summary["metrics"] for summary in saved.values())


def test_second_run_from_another_folder_does_not_parse_again(tmp_path):
    """No KMEANS_MNIST_CACHE: the cache goes to ~/.cache/kmeans-mnist, found from any folder."""
    write_kaggle(tmp_path / "data")
    home = tmp_path / "home"
    env = isolated_env(tmp_path)
    for name in ("KMEANS_MNIST_CACHE", "XDG_CACHE_HOME"):
        env.pop(name, None)
    env["HOME"] = str(home)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    data = str(tmp_path / "data")
    assert (
        run(["3", "--data-dir", data, "--output", "out", "--quiet", "--samples", "0"], first, env).returncode
        == 0
    )
    entries = {
        path: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in (home / ".cache" / "kmeans-mnist").iterdir()
    }
    assert len(entries) == 6  # images, labels and meta of the two CSV files
    assert (
        run(["3", "--data-dir", data, "--output", "out", "--quiet", "--samples", "0"], second, env).returncode
        == 0
    )
    after = {
        path: (path.stat().st_ino, path.stat().st_mtime_ns)
        for path in (home / ".cache" / "kmeans-mnist").iterdir()
    }
    assert after == entries  # a parse would have written new entries
    assert sorted(path.name for path in first.iterdir()) == ["out"]  # no dataset/.cache left behind
    assert sorted(path.name for path in second.iterdir()) == ["out"]


# --- the real data: IDX files against the CSV route, and predict -------------------------------


@pytest.fixture
def real_env(kaggle_cache, tmp_path) -> dict[str, str]:
    env = isolated_env(tmp_path)
    env["KAGGLEHUB_CACHE"] = str(kaggle_cache)
    return env


def test_idx_files_give_the_csv_routes_metrics(tmp_path, real_env, shared_datasets):
    common = [
        "10",
        "--split",
        "test",
        "--limit",
        "3000",
        "--seed",
        "3",
        "--samples",
        "0",
        "--output",
        "out",
        "--quiet",
    ]
    csv_route = run(common, tmp_path, real_env)
    idx_route = run(
        [*common, "--dataset", "files", "--data-dir", str(shared_datasets / "mnist")], tmp_path, real_env
    )
    assert csv_route.returncode == 0 and idx_route.returncode == 0, csv_route.stderr + idx_route.stderr
    from_csv = summaries(tmp_path / "out" / "mnist-test-limit3000")["k10"]
    from_idx = summaries(tmp_path / "out" / "mnist-idx-test-limit3000")["k10"]
    assert from_idx["n_samples"] == from_csv["n_samples"] == 3_000
    assert from_idx["metrics"] == from_csv["metrics"] and from_idx["inertia"] == from_csv["inertia"]
    assert from_idx["confusion"]["counts"] == from_csv["confusion"]["counts"]


def test_predict_the_test_split_with_a_model_of_the_train_split(tmp_path, real_env, shared_datasets):
    mnist = str(shared_datasets / "mnist")
    fit = ["10", "--dataset", "files", "--data-dir", mnist, "--split", "train", "--max-iter", "5"]
    assert run([*fit, "--samples", "0", "--output", "out", "--quiet"], tmp_path, real_env).returncode == 0
    model = tmp_path / "out" / "mnist-idx-train-maxiter5" / "k10" / "model.npz"
    before = snapshot(tmp_path / "out")
    result = run(
        ["predict", str(model), mnist, "--split", "test", "--output", "test.csv"], tmp_path, real_env
    )
    assert result.returncode == 0, result.stderr
    assert "assigned 10,000 images" in result.stderr and snapshot(tmp_path / "out") == before
    with open(tmp_path / "test.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 10_000 and list(rows[0]) == ["index", "label", "cluster", "distance"]
    images = read_idx_images(shared_datasets / "mnist" / "t10k-images-idx3-ubyte.gz").astype(np.float64)
    centers = np.load(model)["cluster_centers"]
    squared = ((images[:, None, :] - centers[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal([int(row["cluster"]) for row in rows], squared.argmin(axis=1) + 1)
    np.testing.assert_allclose(
        [float(row["distance"]) for row in rows], np.sqrt(squared.min(axis=1)), rtol=1e-5
    )
    labels = np.frombuffer(
        gzip.decompress((shared_datasets / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()),
        np.uint8,
        offset=8,
    )
    assert [int(row["label"]) for row in rows] == labels.tolist()
    assert [int(row["index"]) for row in rows] == list(range(10_000))

    # the named dataset gives the same rows as its IDX twin
    named = run(
        ["predict", str(model), "mnist", "--split", "test", "--output", "named.csv", "--quiet"],
        tmp_path,
        real_env,
    )
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "named.csv").read_text() == (tmp_path / "test.csv").read_text()


# --- predict on small data ----------------------------------------------------------------------


@pytest.fixture
def small_model(tmp_path, model_home) -> Path:
    """tmp_path holding a copy of model_home; the path of its model.npz."""
    shutil.copytree(model_home, tmp_path, dirs_exist_ok=True)
    return tmp_path / "out" / "mnist" / "k4" / "model.npz"


def test_predict_to_stdout_matches_the_fit(tmp_path, small_model):
    result = run_cli(["predict", str(small_model), "mnist", "--data-dir", "data"], tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    predicted = list(csv.DictReader(result.stdout.splitlines()))
    with open(small_model.parent / "assignments.csv", newline="") as file:
        fitted = list(csv.DictReader(file))
    assert len(predicted) == len(fitted) == 40  # no blank images in this data
    assert [row["cluster"] for row in predicted] == [row["cluster"] for row in fitted]
    assert [row["label"] for row in predicted] == [row["label"] for row in fitted]


def test_predict_an_npy_without_labels(tmp_path, small_model):
    images, _ = random_images(5, 9)
    np.save(tmp_path / "new.npy", images.reshape(5, -1))
    result = run_cli(["predict", str(small_model), "new.npy"], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert len(rows) == 5 and {row["label"] for row in rows} == {""}
    assert {int(row["cluster"]) for row in rows} <= {1, 2, 3, 4}


def test_predict_into_a_closed_pipe_is_quiet(tmp_path, small_model):
    command = f"{sys.executable} -m kmeans_mnist predict {small_model} mnist --data-dir data | head -c 10"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "index,labe" and result.stderr == ""


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("size", ["is a model of 28x28 images", "usps holds 16x16 images"]),
        ("no model", ["model file", "not found", "model.npz"]),
        ("not a model", ["is not a model file kmeans-mnist wrote"]),
        ("model is a folder", ["is a folder, not a regular file"]),
        ("output is a folder", ["--output", "is a folder"]),
        ("data-dir with a path", ["--data-dir does not apply"]),
        ("no source", ["required"]),
    ],
)
def test_predict_errors_are_one_line_and_write_nothing(tmp_path, small_model, case, fragments):
    model = str(small_model)
    args = {
        "size": ["predict", model, "usps", "--output", "p.csv"],
        "no model": ["predict", "nowhere/model.npz", "mnist", "--data-dir", "data", "--output", "p.csv"],
        "not a model": ["predict", "data/mnist_test.csv", "mnist", "--data-dir", "data", "--output", "p.csv"],
        "model is a folder": ["predict", "data", "mnist", "--data-dir", "data", "--output", "p.csv"],
        "output is a folder": ["predict", model, "mnist", "--data-dir", "data", "--output", "out"],
        "data-dir with a path": ["predict", model, "new.npy", "--data-dir", "data"],
        "no source": ["predict", model],
    }[case]
    before = snapshot(tmp_path)
    fails_cleanly(run_cli(args, tmp_path), *fragments)
    assert snapshot(tmp_path) == before


def test_help_tells_of_own_files_and_predict(tmp_path):
    result = run_cli(["--help"], tmp_path)
    for text in ("files", "--size", "--shape", "--keys", "--skip-unreadable", "predict"):
        assert text in result.stdout
    result = run_cli(["predict", "--help"], tmp_path)
    assert result.returncode == 0 and "MODEL" in result.stdout and "SOURCE" in result.stdout


def test_predict_never_imports_scikit_learn(tmp_path, small_model):
    code = (
        "import sys; from kmeans_mnist import cli; "
        f"code = cli.main(['predict', {str(small_model)!r}, 'mnist', '--data-dir', 'data', '--output', 'p.csv']); "
        "print(code, sorted(name for name in sys.modules if name.split('.')[0] == 'sklearn'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True
    )
    assert result.stdout.strip() == "0 []", result.stderr


def test_a_sheet_beyond_the_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch, capsys):
    from kmeans_mnist import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 1_000
    )  # the packaged sheets are far larger than twice this
    assert cli.main(["3", "--dataset", "usps", "--quiet", "--output", "out"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert (
        captured.err.startswith("error: ")
        and "usps_1.jpg has more pixels than Pillow's decompression-bomb" in captured.err
    )
    assert not (tmp_path / "out").exists()
