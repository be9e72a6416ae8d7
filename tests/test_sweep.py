"""Sweeps a person can trust: scores for choosing K (against scikit-learn), repeats, experiment
folders keyed by their settings, damaged or foreign files where ours go, closed pipes, odd seeds
and paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import isolated_env, leftovers, run_cli, snapshot, write_kaggle, write_usps
from kmeans_mnist import cli
from kmeans_mnist.cli import exits
from kmeans_mnist.results import experiment as summary
from kmeans_mnist.results import metrics
from kmeans_mnist.results import model as model_file

sklearn_metrics = pytest.importorskip("sklearn.metrics")


# --- the scores -----------------------------------------------------------------------------------


def random_case(rng, integer: bool):
    n = int(rng.integers(12, 300))
    d = int(rng.integers(1, 12))
    k = int(rng.integers(2, min(9, n - 1) + 1))
    X = (
        rng.integers(0, 256, (n, d)).astype(np.uint8)
        if integer
        else rng.normal(size=(n, d)) * rng.choice([1e-3, 1, 1e3])
    )
    labels = rng.integers(0, k, n) * 7 + 3  # label values need not be 0..K-1
    return X, labels


@pytest.mark.parametrize("integer", [False, True], ids=["float", "uint8"])
def test_label_free_scores_agree_with_scikit_learn(integer):
    rng = np.random.default_rng(5)
    for _ in range(15):
        X, labels = random_case(rng, integer)
        if len(np.unique(labels)) < 2:
            continue
        reference = X.astype(np.float64)
        assert metrics.silhouette(X, labels) == pytest.approx(
            sklearn_metrics.silhouette_score(reference, labels), abs=1e-6
        )
        scores = metrics.dispersion_scores(X, labels)
        assert scores["calinski_harabasz"] == pytest.approx(
            sklearn_metrics.calinski_harabasz_score(reference, labels), rel=1e-6
        )
        assert scores["davies_bouldin"] == pytest.approx(
            sklearn_metrics.davies_bouldin_score(reference, labels), abs=1e-6
        )


@pytest.mark.parametrize("integer", [False, True], ids=["float", "uint8"])
def test_dispersion_scores_in_blocks_match_one_block(monkeypatch, integer):
    """A cluster is read a bounded block of rows at a time (8.1M memory-mapped images never become
    one float64 copy): blocks of 7 rows give scikit-learn's scores too."""
    rng = np.random.default_rng(9)
    X = rng.integers(0, 256, (300, 12)).astype(np.uint8 if integer else np.float64)
    labels = rng.integers(0, 4, len(X))
    monkeypatch.setattr(metrics, "DISPERSION_BLOCK_VALUES", 7 * X.shape[1])
    scores = metrics.dispersion_scores(X, labels)
    reference = X.astype(np.float64)
    assert scores["calinski_harabasz"] == pytest.approx(
        sklearn_metrics.calinski_harabasz_score(reference, labels), rel=1e-9
    )
    assert scores["davies_bouldin"] == pytest.approx(
        sklearn_metrics.davies_bouldin_score(reference, labels), rel=1e-9
    )


def test_dispersion_scores_memory_is_bounded_by_blocks_not_clusters():
    """Scoring never holds a float64 copy of a cluster: peak well below the uint8 data's size."""
    import tracemalloc

    rng = np.random.default_rng(2)
    X = rng.integers(0, 256, (60_000, 784), dtype=np.uint8)  # 47 MB; one cluster as float64: 280 MB
    labels = (rng.random(len(X)) < 0.75).astype(np.int64)
    tracemalloc.start()
    try:
        metrics.dispersion_scores(X, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes


def test_silhouette_reuses_its_distances_and_samples_large_data():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (5000, 16)).astype(np.uint8)  # float32 distances above 4,096 images
    labelings = [rng.integers(0, k, len(X)) for k in (2, 3, 5)]
    sample = metrics.SilhouetteSample(X)
    assert sample.size == 5000 and sample.index is None
    together = sample.scores(labelings)
    for labels, value in zip(labelings, together, strict=True):
        assert value == pytest.approx(sklearn_metrics.silhouette_score(X.astype(float), labels), abs=1e-6)
    sampled = metrics.SilhouetteSample(X, sample_size=1000)
    assert sampled.size == 1000 and len(np.unique(sampled.index)) == 1000
    assert np.array_equal(sampled.index, metrics.SilhouetteSample(X, sample_size=1000).index)  # fixed seed
    labels = labelings[1]
    assert sampled.score(labels) == pytest.approx(
        sklearn_metrics.silhouette_score(X[sampled.index].astype(float), labels[sampled.index]), abs=1e-6
    )


def test_silhouette_keeps_half_the_pairwise_distances():
    """The sample's distances are kept once (they serve every K), but only the half on and above
    the diagonal: the full matrix would be sample_size^2 values."""
    import tracemalloc

    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (3000, 64)).astype(np.uint8)  # float64 distances: 72 MB in full
    labels = rng.integers(0, 4, len(X))
    tracemalloc.start()
    try:
        sample = metrics.SilhouetteSample(X)
        value = sample.score(labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert value == pytest.approx(sklearn_metrics.silhouette_score(X.astype(float), labels), abs=1e-9)
    assert peak < 0.7 * len(X) ** 2 * 8


def test_scores_are_undefined_for_one_cluster():
    X = np.arange(20.0).reshape(10, 2)
    assert metrics.silhouette(X, np.zeros(10)) is None
    assert metrics.dispersion_scores(X, np.zeros(10)) == {"calinski_harabasz": None, "davies_bouldin": None}


def test_knee_as_kneed_defines_it():
    kneed = pytest.importorskip("kneed", reason='needs kneed, in the test extra: pip install -e ".[test]"')
    rng = np.random.default_rng(3)
    for _ in range(200):
        ks = np.sort(rng.choice(np.arange(1, 40), int(rng.integers(3, 12)), replace=False))
        inertia = np.sort(rng.random(len(ks)) * rng.choice([1, 1e9]))[::-1]
        if rng.random() < 0.3:
            inertia = rng.random(len(ks))  # not even decreasing
        expected = kneed.KneeLocator(ks, inertia, curve="convex", direction="decreasing").knee
        assert metrics.knee(ks.tolist(), inertia.tolist()) == expected
    assert metrics.knee([1, 2, 3, 4, 5, 6], [100, 40, 20, 15, 12, 10]) == 3
    assert metrics.knee([3, 4], [10, 5]) is None and metrics.knee([1, 2, 3], [5, 5, 5]) is None


def test_stability_is_the_mean_pairwise_ari():
    rng = np.random.default_rng(0)
    labelings = [rng.integers(0, 4, 300) for _ in range(4)]
    labelings.append(labelings[0] * 2 + 1)  # the same clusters under other numbers
    expected = np.mean(
        [
            sklearn_metrics.adjusted_rand_score(labelings[i], labelings[j])
            for i in range(5)
            for j in range(i + 1, 5)
        ]
    )
    assert metrics.stability(labelings) == pytest.approx(expected, abs=1e-12)
    assert metrics.agreement(labelings[0], labelings[4]) == 1.0
    assert metrics.stability(labelings[:1]) is None


# --- repeats -----------------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path, monkeypatch):
    write_kaggle(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    return tmp_path


def test_repeats_report_mean_std_stability_and_keep_the_best(small, capsys):
    args = [
        "3",
        "4",
        "--data-dir",
        "data",
        "--output",
        "out",
        "--repeats",
        "3",
        "--seed",
        "5",
        "--samples",
        "0",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-2:] == ["stability", "folder"]
    assert "±" in out[1] and out[1].split()[-1] == "out/mnist-repeats3/k3"
    assert any(line.startswith("  Prefers: ") for line in out)
    folder = small / "out" / "mnist-repeats3"
    record = json.loads((folder / "k3" / "summary.json").read_text())
    runs = record["runs"]
    assert [run["seed"] for run in runs] == [5, 6, 7] and record["repeats"] == 3
    best = min(runs, key=lambda run: run["inertia"])
    assert record["best_seed"] == best["seed"] and record["inertia"] == pytest.approx(best["inertia"])
    for name in ("inertia", "silhouette", "accuracy", "nmi", "ari", "purity", "davies_bouldin"):
        values = [run[name] for run in runs]
        assert record["scores"][name]["mean"] == pytest.approx(np.mean(values))
        assert record["scores"][name]["std"] == pytest.approx(np.std(values))
    assert 0 <= record["stability"] <= 1 or record["stability"] == pytest.approx(1)
    with np.load(folder / "k3" / "model.npz", allow_pickle=False) as model:
        assert int(model["seed"]) == best["seed"]
    [row] = [row for row in summary.read_summary(folder / "summary.csv") if row["k"] == "3"]
    assert row["repeats"] == "3" and row["best_seed"] == str(best["seed"]) and row["stability"]
    assert float(row["accuracy"]) == pytest.approx(np.mean([run["accuracy"] for run in runs]), abs=1e-4)
    markdown = (folder / "results.md").read_text()
    assert "| K | ACC | NMI | ARI | purity | silhouette | CH | DB | stability |" in markdown
    assert f"- K=3: ACC {float(row['accuracy']):.3f} ± {float(row['accuracy_std']):.3f}" in markdown
    assert "$\\pm$" in (folder / "results.tex").read_text() or "\\pm" in (folder / "results.tex").read_text()
    assert (folder / "k-choice.png").is_file()


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "x", ""])
def test_bad_repeats_is_one_error_line_and_nothing_written(small, capsys, value):
    before = snapshot(small)
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--repeats", value]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --repeats must be")
    assert snapshot(small) == before


# --- experiment folders --------------------------------------------------------------------


def test_experiment_names():
    assert summary.experiment_name("mnist") == "mnist"
    assert summary.experiment_name("mnist", limit=3000) == "mnist-limit3000"
    assert (
        summary.experiment_name(
            "fashion", split="test", keep_blank=True, init="random", n_init=3, max_iter=50, tol=0, repeats=5
        )
        == "fashion-test-keepblank-init-random-ninit3-maxiter50-repeats5-tol0"
    )
    assert summary.experiment_name("usps", init="k-means||") == "usps-init-kmeansll"


def readme_examples() -> list[list[str]]:
    """The README's "More examples", in order, as argument lists (a loop gives one per K)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("More examples:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if "-m kmeans_mnist" not in line:  # predict, which reads a model and writes no sweep
            continue
        if line.startswith("for k in"):
            ks = line.split("for k in", 1)[1].split(";", 1)[0].split()
            template = line.split("do", 1)[1].split("&", 1)[0].split()
            commands += [[k if word == "$k" else word for word in template] for k in ks]
        elif line:
            commands.append(line.split())
    return [command[command.index("kmeans_mnist") + 1 :] for command in commands]


def test_the_readme_examples_in_order_never_mix_settings(tmp_path, monkeypatch, capsys):
    """Each folder's rows, chart and tables come from runs of one data selection and settings."""
    examples = readme_examples()
    assert len(examples) >= 5
    write_kaggle(tmp_path / "mnist", "mnist", n_train=50, n_test=20)
    write_kaggle(tmp_path / "fashion", "fashion", n_train=50, n_test=20, seed=3)
    write_usps(tmp_path / "sheets", size=(32, 48))
    (tmp_path / "my-photos").mkdir()
    for number, image in enumerate(np.random.default_rng(2).integers(0, 256, (30, 20, 20), dtype=np.uint8)):
        Image.fromarray(image).save(tmp_path / "my-photos" / f"photo{number:02d}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    for args in examples:
        dataset = args[args.index("--dataset") + 1] if "--dataset" in args else "mnist"
        args = [("30" if word == "3000" else word) for word in args]  # --limit on 70 images
        if "--data-dir" not in args:
            args += ["--data-dir", {"usps": "sheets"}.get(dataset, dataset)]
        assert cli.main([*args, "--samples", "0", "--quiet"]) == 0, args
    capsys.readouterr()
    folders = sorted(path.name for path in (tmp_path / "output").iterdir())
    assert "mnist" in folders and "mnist-limit30" in folders
    for name in folders:
        folder = tmp_path / "output" / name
        settings = json.loads((folder / "settings.json").read_text())
        rows = summary.read_summary(folder / "summary.csv")
        assert rows and (folder / "k-choice.png").is_file() and (folder / "results.md").is_file()
        for row in rows:
            assert row["n_images"] == str(settings["n_images"]) and row["limit"] == str(
                settings["limit"] or ""
            )
            assert row["dataset"] == settings["dataset"] and row["init"] == settings["init"]
            record = json.loads((folder / f"k{row['k']}" / "summary.json").read_text())
            assert record["data_digest"] == settings["data_digest"] and record["run_id"] == row["run_id"]
    assert [row["k"] for row in summary.read_summary(tmp_path / "output" / "mnist" / "summary.csv")] == [
        "3", "4", "5", "6", "7",
    ]  # fmt: skip
    assert "usps-repeats5" in folders


def test_other_data_in_the_same_folder_is_refused(small, capsys):
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 0
    write_kaggle(small / "data", n_train=45, n_test=20, seed=9)  # 65 images now, not 60
    before = snapshot(small / "out")
    assert cli.main(["4", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "error: out/mnist (see settings.json) holds results made with other data or settings: number of "
        "images 60 there, 65 in this run; never mixed: move out/mnist away, choose another --output, or add --replace to have it moved aside"
    )
    assert snapshot(small / "out") == before


def write_old_folder(folder: Path, n_samples: int) -> None:
    """A folder as version 0.1 left it: k3/summary.json without settings, old summary.csv, elbow.png."""
    (folder / "k3").mkdir(parents=True)
    record = {
        "dataset": "mnist",
        "source": "data: mnist_train.csv + mnist_test.csv",
        "n_samples": n_samples,
        "image_shape": [28, 28],
        "k": 3,
        "init": "k-means++",
        "n_init": 1,
        "seed": 0,
        "max_iter": 300,
        "tol": 0.0001,
        "n_iter": 4,
        "converged": True,
        "inertia": 123.5,
        "empty_cluster_reseeds": 0,
        "seconds": {"fit": 0.5},
        "metrics": {"purity": 0.5, "accuracy": 0.4, "nmi": 0.3, "ari": 0.2},
    }
    (folder / "k3" / "summary.json").write_text(json.dumps(record))
    (folder / "summary.csv").write_text(
        "k,inertia,purity,accuracy,nmi,ari,n_iter,fit_seconds,seed\n3,1.235000e+02,0.5,0.4,0.3,0.2,4,0.5,0\n"
    )
    (folder / "elbow.png").write_bytes(b"old chart")


def test_a_folder_of_version_0_1_is_adopted_when_it_matches(small, capsys):
    folder = small / "out" / "mnist"
    write_old_folder(folder, n_samples=60)
    assert [row["k"] for row in summary.read_summary(folder / "summary.csv")] == ["3"]  # still loads
    assert cli.main(["4", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 0
    rows = summary.read_summary(folder / "summary.csv")
    assert [row["k"] for row in rows] == ["3", "4"]
    assert (
        rows[0]["inertia"] == "1.235000e+02" and rows[0]["accuracy"] == "0.4000" and rows[0]["run_id"] == ""
    )
    assert not (folder / "elbow.png").exists() and (folder / "k-choice.png").is_file()


def test_a_folder_of_version_0_1_with_other_data_is_refused(small, capsys):
    folder = small / "out" / "mnist"
    write_old_folder(folder, n_samples=3000)
    before = snapshot(small / "out")
    assert cli.main(["4", "--data-dir", "data", "--output", "out", "--quiet"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "out/mnist (its k3 folder) holds results made with other data or settings" in line
    assert "number of images 3,000 there, 60 in this run" in line
    assert snapshot(small / "out") == before


# --- damaged or foreign files where ours go ------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("k,inertia\n²,1.5\n", "line 2: k '²' is not a valid value"),
        ("k,inertia\n" + "9" * 5000 + ",1.5\n", "line 2: k '99999999999999999999' is not a valid value"),
        ("k,inertia\n3," + "1" * 5000 + "\n", "line 2: inertia"),
        ("inertia\n1.5\n", "line 1: the header has no 'k' column"),
    ],
    ids=["superscript-two", "thousands-of-digits", "huge-inertia", "no-k"],
)
def test_damaged_summary_is_one_line(tmp_path, content, expect):
    path = tmp_path / "summary.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(summary.SummaryError, match=expect.replace("(", r"\(")) as error:
        summary.read_summary(path)
    assert "\n" not in str(error.value)


def test_summary_with_a_bom_reads(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_bytes(b"\xef\xbb\xbfk,inertia\r\n3,1.5\r\n")
    assert summary.read_summary(path) == [{"k": "3", "inertia": "1.5"}]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("summary.csv", "fifo"),
        (".summary.lock", "fifo"),
        ("settings.json", "fifo"),
        ("k-choice.png", "fifo"),
        ("summary.csv", "folder"),
        (".summary.lock", "folder"),
        ("k3", "fifo"),
    ],
)
def test_pipes_and_folders_where_our_files_go(tmp_path, name, kind):
    """Never hangs, writes no k folder: one error line naming the file, before the load."""
    write_kaggle(tmp_path / "data")
    folder = tmp_path / "out" / "mnist"
    folder.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(folder / name)
    else:
        (folder / name).mkdir()
    before = snapshot(tmp_path, skip=("parsed-cache", "kagglehub-cache", "out"))
    result = run_cli(["3", "--data-dir", "data", "--output", "out"], tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    what = "a named pipe" if kind == "fifo" else "a folder"
    assert line.startswith(f"error: out/mnist/{name} is {what}, not ") and line.endswith("move it away")
    assert sorted(path.name for path in folder.iterdir()) == [name]
    assert snapshot(tmp_path, skip=("parsed-cache", "kagglehub-cache", "out")) == before


def test_closed_stdout_ends_quietly_with_the_results_written(tmp_path):
    write_kaggle(tmp_path / "data")
    reader, writer = os.pipe()
    os.close(reader)  # like `| head -c 10` that has already gone
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "kmeans_mnist",
                "3",
                "4",
                "--data-dir",
                "data",
                "--output",
                "out",
                "--samples",
                "0",
            ],
            cwd=tmp_path,
            env=isolated_env(tmp_path),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert result.returncode == exits.EXIT_BROKEN_PIPE
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    rows = summary.read_summary(tmp_path / "out" / "mnist" / "summary.csv")
    assert [row["k"] for row in rows] == ["3", "4"] and (tmp_path / "out" / "mnist" / "report.html").is_file()
    assert leftovers(tmp_path / "out") == []


# --- odd seeds and paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1, 2**64, 2**80 + 3])
def test_a_huge_seed_is_stored_without_pickling(tmp_path, seed):
    from types import SimpleNamespace

    model = SimpleNamespace(
        cluster_centers_=np.zeros((2, 4)), inertia_=1.0, n_iter_=1, converged_=True, n_empty_reseeds_=0
    )
    model_file.save_model(tmp_path / "model.npz", model, seed=seed)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as stored:
        assert int(stored["seed"]) == seed


def test_a_huge_seed_runs_from_the_command_line(small, capsys):
    seed = str(2**63 + 7)
    assert (
        cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", seed, "--samples", "0", "--quiet"])
        == 0
    )
    with np.load(small / "out" / "mnist" / "k3" / "model.npz", allow_pickle=False) as stored:
        assert str(int(stored["seed"])) == seed
    assert json.loads((small / "out" / "mnist" / "k3" / "summary.json").read_text())["seed"] == int(seed)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_path_that_is_not_utf8_under_a_posix_locale(tmp_path):
    """No lone surrogate in summary.json, summary.csv or settings.json: the bytes are shown as \\xNN."""
    data = os.fsencode(tmp_path) + b"/d\xffata"
    write_usps(Path(os.fsdecode(data)))
    env = isolated_env(tmp_path) | {"LC_ALL": "C", "LANG": "C"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmeans_mnist",
            "3",
            "--dataset",
            "usps",
            "--data-dir",
            data,
            "--output",
            "out",
            "--quiet",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "out" / "usps"
    for name in ("k3/summary.json", "summary.csv", "settings.json", "results.md"):
        text = (folder / name).read_bytes().decode("utf-8")  # strict: valid UTF-8
        assert "\\udcff" not in text and "\udcff" not in text
    assert "d\\\\xffata" in (folder / "k3" / "summary.json").read_text()
