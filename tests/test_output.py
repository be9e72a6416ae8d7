"""The files a run leaves behind: formats, contents, the summary across K, and crash safety."""

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist import output
from kmeans_mnist.metrics import evaluate
from kmeans_mnist.output import load_model, run_dir, write_run

PARAMS = {"init": "k-means++", "n_init": 1, "seed": 7, "max_iter": 300, "tol": 1e-4}
SECONDS = {"load": 0.5, "fit": 1.25}
FASHION_NAMES = dict(enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]))


@dataclass(frozen=True)
class FakeDataset:
    """Stands in for kmeans_mnist.datasets.Dataset (same fields and properties)."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    class_names: dict[int, str] | None
    source: str = "test"
    n_blank_skipped: int = 0

    @property
    def all_pixel(self) -> np.ndarray:
        return self.images.reshape(len(self.images), -1)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.images.shape[1:]


def make_dataset(name="fashion", n=60, shape=(28, 28), labelled=True, seed=0) -> FakeDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 5, size=n).astype(np.int64) if labelled else None
    return FakeDataset(name, images, labels, FASHION_NAMES if labelled else None, n_blank_skipped=3)


def fit_stand_in(dataset: FakeDataset, k: int, seed=0, empty_last=False) -> SimpleNamespace:
    """A fitted-model stand-in: centres near random images, each image given its nearest centre.

    One centre pixel lies outside 0..255 to exercise clipping; empty_last leaves cluster K unused.
    """
    rng = np.random.default_rng(seed)
    pixels = dataset.all_pixel.astype(np.float64)
    centers = pixels[rng.choice(len(pixels), size=k, replace=False)] + rng.uniform(
        -0.6, 0.6, (k, pixels.shape[1])
    )
    centers[0, :2] = [-3.7, 300.2]
    usable = k - 1 if empty_last else k
    squared = ((pixels[:, None, :] - centers[None, :usable, :]) ** 2).sum(axis=2)
    labels = squared.argmin(axis=1)
    return SimpleNamespace(
        cluster_centers_=centers,
        labels_=labels,
        inertia_=float(squared.min(axis=1).sum()),
        n_iter_=4,
        converged_=True,
        n_empty_reseeds_=2,
    )


def write(root, dataset, model, **options) -> Path:
    return write_run(root, dataset, model, params=PARAMS, seconds=SECONDS, **options)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def hidden_entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(".k"))


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "L"
        return np.asarray(image)


# --- one run: which files, in which format ---------------------------------------------------


def test_run_writes_every_file_for_labelled_data(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model)
    assert folder == run_dir(tmp_path, "fashion", 3) == tmp_path / "fashion" / "k3"
    assert set(snapshot(folder)) == {
        "centroids/centroid_01.png",
        "centroids/centroid_02.png",
        "centroids/centroid_03.png",
        "centroids.png",
        "clusters/cluster_01.png",
        "clusters/cluster_02.png",
        "clusters/cluster_03.png",
        "assignments.csv",
        "summary.json",
        "confusion.png",
        "model.npz",
    }
    with Image.open(folder / "confusion.png") as image:
        assert image.format == "PNG"
    assert hidden_entries(folder.parent) == []


def test_centroid_pngs_hold_rounded_clipped_centres(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model)
    expected = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8).reshape(3, 28, 28)
    for number in range(3):
        assert np.array_equal(
            read_png(folder / "centroids" / f"centroid_{number + 1:02d}.png"), expected[number]
        )
    assert expected[0].flat[0] == 0 and expected[0].flat[1] == 255


def test_centroid_sheet_shows_upscaled_representatives(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    sheet = read_png(write(tmp_path, dataset, model) / "centroids.png")
    representative = np.clip(np.rint(model.cluster_centers_[1]), 0, 255).astype(np.uint8).reshape(28, 28)
    tile = 28 * 4
    assert sheet.shape[1] > 3 * tile and sheet.shape[0] > tile
    left = 4 + tile + 4  # second tile: gap, one tile, gap
    assert np.array_equal(
        sheet[4 : 4 + tile, left : left + tile], np.kron(representative, np.ones((4, 4), np.uint8))
    )
    assert (sheet[4 + tile : 4 + tile + 16] < 128).any(), "a caption is drawn under the tiles"


def test_cluster_grid_starts_with_the_nearest_member(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model, samples=4)
    centers, labels = model.cluster_centers_, model.labels_
    for cluster in range(3):
        members = np.flatnonzero(labels == cluster)
        distances = np.linalg.norm(dataset.all_pixel[members] - centers[cluster], axis=1)
        by_distance = members[np.argsort(distances)]
        grid = read_png(folder / "clusters" / f"cluster_{cluster + 1:02d}.png")
        shown = min(4, len(members))
        columns = min(2, shown)
        assert grid.shape == (2 + math.ceil(shown / columns) * 30, 2 + columns * 30)
        for position in range(shown):
            top, left = 2 + (position // columns) * 30, 2 + (position % columns) * 30
            assert np.array_equal(
                grid[top : top + 28, left : left + 28], dataset.images[by_distance[position]]
            )


def test_default_grid_is_eight_wide(tmp_path):
    dataset = make_dataset(n=100)
    model = fit_stand_in(dataset, 2, empty_last=True)  # all 100 in cluster 1: the grid shows 64
    grid = read_png(write(tmp_path, dataset, model) / "clusters" / "cluster_01.png")
    assert grid.shape == (2 + 8 * 30, 2 + 8 * 30)


def test_assignments_csv_rows(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    with open(write(tmp_path, dataset, model) / "assignments.csv", newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == ["index", "label", "cluster", "distance"]
        rows = list(reader)
    assert len(rows) == len(dataset.images)
    expected_distances = np.linalg.norm(dataset.all_pixel - model.cluster_centers_[model.labels_], axis=1)
    for index, (text_index, label, cluster, distance) in enumerate(rows):
        assert int(text_index) == index
        assert int(label) == dataset.labels[index]
        assert int(cluster) == model.labels_[index] + 1
        assert float(distance) == pytest.approx(expected_distances[index], rel=1e-5)


def test_summary_json_for_labelled_data(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    seconds = dict(SECONDS)
    summary = json.loads((write(tmp_path, dataset, model) / "summary.json").read_text())
    assert seconds == SECONDS, "the caller's dict is left alone"
    assert summary["dataset"] == "fashion" and summary["source"] == "test"
    assert summary["n_samples"] == 60 and summary["image_shape"] == [28, 28]
    assert summary["k"] == 3 and summary["init"] == "k-means++" and summary["n_init"] == 1
    assert summary["seed"] == 7 and summary["n_iter"] == 4 and summary["converged"] is True
    assert summary["inertia"] == pytest.approx(model.inertia_)
    assert summary["cluster_sizes"] == np.bincount(model.labels_, minlength=3).tolist()
    assert sum(summary["cluster_sizes"]) == 60
    assert summary["n_blank_skipped"] == 3
    assert summary["empty_cluster_reseeds"] == 2
    assert set(summary["seconds"]) == {"load", "fit", "write"} and summary["seconds"]["fit"] == 1.25
    scores, table, classes = evaluate(dataset.labels, model.labels_, 3)
    assert summary["metrics"] == pytest.approx(scores)
    assert summary["confusion"]["classes"] == [FASHION_NAMES[int(value)] for value in classes]
    assert summary["confusion"]["counts"] == table.tolist()


def test_unlabelled_16px_run_has_no_metrics_and_no_confusion(tmp_path):
    dataset = make_dataset(name="usps", n=40, shape=(16, 16), labelled=False)
    model = fit_stand_in(dataset, 2)
    folder = write(tmp_path, dataset, model, metrics={"purity": 1.0})
    assert not (folder / "confusion.png").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert "metrics" not in summary and "confusion" not in summary
    assert summary["image_shape"] == [16, 16]
    assert read_png(folder / "centroids" / "centroid_01.png").shape == (16, 16)
    assert read_png(folder / "centroids.png").shape[1] == 4 + 2 * (16 * 7 + 4)
    with open(folder / "assignments.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 40 and {row["label"] for row in rows} == {""}
    assert [int(row["cluster"]) for row in rows] == (model.labels_ + 1).tolist()


def test_given_metrics_and_table_are_written_as_given(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    scores, table, classes = evaluate(dataset.labels, model.labels_, 3)
    scores = {**scores, "purity": 0.123}
    folder = write(tmp_path, dataset, model, metrics=scores, table=table, classes=classes)
    assert json.loads((folder / "summary.json").read_text())["metrics"]["purity"] == 0.123


def test_empty_cluster_still_gets_its_files(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 4, empty_last=True)
    folder = write(tmp_path, dataset, model)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cluster_sizes"][-1] == 0 and sum(summary["cluster_sizes"]) == 60
    assert (folder / "clusters" / "cluster_04.png").is_file()
    assert len(summary["confusion"]["counts"]) == 4


def test_file_numbers_widen_for_three_digit_k(tmp_path):
    dataset = make_dataset(n=120, labelled=False)
    model = fit_stand_in(dataset, 100)
    folder = write(tmp_path, dataset, model, samples=1)
    assert (folder / "centroids" / "centroid_001.png").is_file()
    assert (folder / "clusters" / "cluster_100.png").is_file()


def test_export_members_writes_each_image_by_index(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model, export_members=True)
    for cluster in range(3):
        exported = sorted((folder / "clusters" / f"{cluster + 1:02d}").iterdir())
        members = np.flatnonzero(model.labels_ == cluster)
        assert [path.name for path in exported] == [f"{index:06d}.png" for index in members]
        assert np.array_equal(read_png(exported[0]), dataset.images[members[0]])


def test_model_npz_holds_centres_and_metadata_without_pickle(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    with np.load(write(tmp_path, dataset, model) / "model.npz", allow_pickle=False) as stored:
        assert np.array_equal(stored["cluster_centers"], model.cluster_centers_)
        assert int(stored["k"]) == 3 and stored["image_shape"].tolist() == [28, 28]
        assert str(stored["dataset"]) == "fashion" and str(stored["init"]) == "k-means++"
        assert int(stored["seed"]) == 7 and int(stored["n_iter"]) == 4
        assert float(stored["inertia"]) == model.inertia_
        assert int(stored["format_version"]) == output.MODEL_FORMAT_VERSION


def test_load_model_predicts_like_the_saved_model(tmp_path):
    pytest.importorskip(
        "kmeans_mnist.kmeans", reason="kmeans.py is not written yet; load_model needs its KMeans"
    )
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    loaded = load_model(write(tmp_path, dataset, model) / "model.npz")
    assert np.array_equal(loaded.cluster_centers_, model.cluster_centers_)
    assert loaded.inertia_ == model.inertia_ and loaded.n_iter_ == 4 and loaded.converged_ is True
    assert np.array_equal(loaded.predict(dataset.all_pixel), model.labels_)


# --- crash safety and replacement -------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_rerun_leaves_previous_results_untouched(tmp_path, monkeypatch, error):
    dataset = make_dataset()
    folder = write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=1))
    before = snapshot(folder)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(output, "draw_confusion", fail)
    with pytest.raises(type(error)):
        write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=2))
    assert snapshot(folder) == before
    assert hidden_entries(folder.parent) == []


def test_failed_first_run_leaves_nothing(tmp_path, monkeypatch):
    dataset = make_dataset()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "_write_assignments", fail)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, dataset, fit_stand_in(dataset, 3))
    assert list((tmp_path / "fashion").iterdir()) == []


def test_failure_during_the_swap_restores_previous_results(tmp_path, monkeypatch):
    dataset = make_dataset()
    folder = write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=1))
    before = snapshot(folder)
    real_rename = os.rename
    calls = []

    def rename_then_fail(source, destination):
        calls.append(source)
        if len(calls) == 2:  # old folder already moved aside; new one not yet in place
            raise KeyboardInterrupt
        real_rename(source, destination)

    monkeypatch.setattr(output.os, "rename", rename_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=2))
    monkeypatch.undo()
    assert snapshot(folder) == before
    assert hidden_entries(folder.parent) == []


def test_rerun_replaces_the_folder_as_a_whole(tmp_path):
    dataset = make_dataset()
    folder = write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=1), export_members=True)
    (folder / "stray.txt").write_text("left by hand")
    model = fit_stand_in(dataset, 3, seed=2)
    assert write(tmp_path, dataset, model) == folder
    assert not (folder / "stray.txt").exists()
    assert sorted(path.name for path in (folder / "clusters").iterdir()) == [
        "cluster_01.png",
        "cluster_02.png",
        "cluster_03.png",
    ]
    with np.load(folder / "model.npz") as stored:
        assert np.array_equal(stored["cluster_centers"], model.cluster_centers_)
    assert hidden_entries(folder.parent) == []
