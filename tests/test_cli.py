"""The command on its good paths: help, version, several K, the table, --quiet, runs side by side, odd data."""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from cli_support import csv_lines, isolated_env, kaggle_csv, leftovers, random_images, run_cli, write_kaggle
from kmeans_mnist import __version__, cli

OPTIONS = (
    "--dataset",
    "--data-dir",
    "--split",
    "--limit",
    "--keep-blank",
    "--init",
    "--n-init",
    "--max-iter",
    "--tol",
    "--seed",
    "--output",
    "--samples",
    "--export-members",
    "--quiet",
    "--version",
    "--help",
)


def test_help_mentions_every_option(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    for option in OPTIONS:
        assert option in result.stdout, option
    for choice in ("mnist", "fashion", "usps", "k-means++", "random", "train", "test"):
        assert choice in result.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "kagglehub-cache"]  # nothing written


def test_version(tmp_path):
    result = run_cli(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"kmeans-mnist {__version__}"


def test_several_k_in_one_call(tmp_path):
    write_kaggle(tmp_path / "data")
    result = run_cli(["3", "4", "5", "--data-dir", "data", "--output", "out", "--samples", "4"], tmp_path)
    assert result.returncode == 0, result.stderr
    dataset = tmp_path / "out" / "mnist"
    for k in (3, 4, 5):
        summary = json.loads((dataset / f"k{k}" / "summary.json").read_text())
        assert summary["k"] == k and summary["n_samples"] == 30
        assert len(list((dataset / f"k{k}" / "centroids").glob("centroid_*.png"))) == k
    with open(dataset / "summary.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["k"] for row in rows] == ["3", "4", "5"]
    assert (dataset / "k-choice.png").is_file() and not (dataset / "elbow.png").exists()
    assert leftovers(tmp_path / "out") == []

    # stderr: only the "loaded" line; stdout: the table, one row per K, then where the summary is
    assert re.fullmatch(
        r"loaded 30 images of 28x28 from data: mnist_train\.csv \+ mnist_test\.csv \(\d+\.\d\ds\)\n",
        result.stderr,
    )
    header, *lines = result.stdout.splitlines()
    table, last = lines[:3], lines[-1]
    assert header.split() == [
        "K",
        "iter",
        "inertia",
        "silhouette",
        "CH",
        "DB",
        "accuracy",
        "purity",
        "NMI",
        "folder",
    ]
    for k, line in zip((3, 4, 5), table, strict=True):
        fields = line.split()
        assert fields[0] == str(k) and fields[9] == str(
            (tmp_path / "out" / "mnist" / f"k{k}").relative_to(tmp_path)
        )
        assert all(0 <= float(value) <= 1 for value in fields[6:9])
        assert -1 <= float(fields[3]) <= 1 and float(fields[4]) > 0 and float(fields[5]) > 0
    assert lines[3] == "choosing K among K=3, 4, 5 in out/mnist:"
    assert lines[4].startswith("  Prefers: ") and "silhouette K=" in lines[4]
    assert (
        last == "summary: out/mnist/summary.csv, chart: out/mnist/k-choice.png, table: out/mnist/results.md, "
        "report: out/mnist/report.html"
    )


def test_quiet_prints_nothing(tmp_path):
    write_kaggle(tmp_path / "data")
    result = run_cli(["2", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"], tmp_path)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "out" / "mnist" / "k2" / "summary.json").is_file()
    assert not (tmp_path / "out" / "mnist" / "k2" / "clusters").exists()  # --samples 0: no grids


def test_table_notes_a_fit_stopped_by_max_iter(tmp_path, monkeypatch, capsys):
    write_kaggle(tmp_path / "data", n_train=60)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    assert cli.main(["8", "--data-dir", "data", "--split", "train", "--max-iter", "1", "--tol", "0"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.split()[0] == "8"]
    assert row.endswith("(stopped at --max-iter)")


# --- several runs at once ---------------------------------------------------------------------


@pytest.mark.parametrize("round_ks", [((2, 3, 4), (5, 6, 7))], ids=["two-rounds-of-three"])
def test_runs_side_by_side_share_the_summary(tmp_path, round_ks):
    """Like `for k in 2 3 4; do python -m kmeans_mnist $k ... & done; wait`, twice."""
    write_kaggle(tmp_path / "data")
    env = isolated_env(tmp_path)
    done: list[int] = []
    for ks in round_ks:
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kmeans_mnist",
                    str(k),
                    "--data-dir",
                    "data",
                    "--output",
                    "out",
                    "--quiet",
                    "--samples",
                    "2",
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in ks
        ]
        for process in processes:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert out == "" and err == ""
        done += ks
        with open(tmp_path / "out" / "mnist" / "summary.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        assert [int(row["k"]) for row in rows] == sorted(done)
        for row in rows:
            saved = json.loads((tmp_path / "out" / "mnist" / f"k{row['k']}" / "summary.json").read_text())
            assert row["run_id"] == saved["run_id"] and row["n_images"] == "30"
            assert float(row["inertia"]) == pytest.approx(saved["inertia"], rel=1e-6)
            assert all(row[name] for name in ("inertia", "silhouette", "accuracy", "nmi", "seed", "n_iter"))
    assert leftovers(tmp_path / "out") == []


# --- odd data: the whole command, nothing NaN --------------------------------------------------


def odd_data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Train images (N x 28 x 28) and labels for one of the odd data sets."""
    base, labels = random_images(3, seed=4)
    if kind == "duplicates":  # 3 distinct images, 10 copies each
        return np.repeat(base, 10, axis=0), np.repeat(labels, 10)
    if kind == "constant":  # 10 copies of one grey image
        return np.full((10, 28, 28), 7, np.uint8), np.arange(10)
    if kind == "black":  # 10 all-black images
        return np.zeros((10, 28, 28), np.uint8), np.arange(10)
    if kind == "single":
        return base[:1], labels[:1]
    raise ValueError(kind)


ODD_RUNS = [
    ("duplicates", ["3"]),  # K = the number of distinct images
    ("duplicates", ["4", "30"]),  # more clusters than distinct images: some stay empty
    ("duplicates", ["4", "--init", "random", "--n-init", "3"]),
    ("constant", ["1", "2"]),
    ("black", ["1", "3", "--keep-blank"]),
    ("single", ["1"]),
]


@pytest.mark.parametrize(
    ("kind", "args"), ODD_RUNS, ids=[f"{kind}-{'-'.join(args)}" for kind, args in ODD_RUNS]
)
def test_odd_data_runs_without_nan(kind, args, tmp_path, monkeypatch, capsys):
    images, labels = odd_data(kind)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist_train.csv").write_bytes(kaggle_csv(csv_lines(images, labels)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))

    assert cli.main([*args, "--data-dir", "data", "--split", "train", "--output", "out", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    ks = [int(arg) for arg in itertools.takewhile(lambda arg: not arg.startswith("--"), args)]
    folder = tmp_path / "out" / ("mnist-train-keepblank" if "--keep-blank" in args else "mnist-train")
    if "--init" in args:
        folder = tmp_path / "out" / "mnist-train-init-random-ninit3"
    summary_csv = (folder / "summary.csv").read_text()
    assert not re.search(r"nan|inf", summary_csv, re.IGNORECASE), summary_csv
    for k in ks:
        text = (folder / f"k{k}" / "summary.json").read_text()
        assert not re.search(r"NaN|Infinity", text), text
        summary = json.loads(text)
        assert summary["n_samples"] == len(images) and sum(summary["cluster_sizes"]) == len(images)
        assert all(0 <= value <= 1 for name, value in summary["metrics"].items() if name != "ari")
        assignments = (folder / f"k{k}" / "assignments.csv").read_text()
        assert not re.search(r"nan|inf", assignments, re.IGNORECASE)
        clusters = np.loadtxt(folder / f"k{k}" / "assignments.csv", delimiter=",", skiprows=1, ndmin=2)[:, 2]
        assert clusters.min() >= 1 and clusters.max() <= k
        if kind in ("duplicates", "single"):
            distinct = len(np.unique(images.reshape(len(images), -1), axis=0))
            if k >= distinct:  # each distinct image its own cluster: nothing left to explain
                assert summary["inertia"] == 0
                assert sum(size > 0 for size in summary["cluster_sizes"]) == distinct
