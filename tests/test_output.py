"""The files a run leaves behind: formats, contents, the summary across K, and crash safety."""

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist import atomic
from kmeans_mnist.cli.sweep import write_run
from kmeans_mnist.render import kfolder
from kmeans_mnist.results import run as output
from kmeans_mnist.results.metrics import evaluate
from kmeans_mnist.results.model import MODEL_FORMAT_VERSION, load_model
from kmeans_mnist.results.run import run_dir

PARAMS = {"init": "k-means++", "n_init": 1, "seed": 7, "max_iter": 300, "tol": 1e-4}
SECONDS = {"load": 0.5, "fit": 1.25}
FASHION_NAMES = dict(enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]))


@dataclass(frozen=True)
class FakeDataset:
    """Stands in for kmeans_mnist.data.datasets.Dataset (same fields and properties)."""

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


def find_tile(picture: np.ndarray, tile: np.ndarray, scale: int = 1) -> list[tuple[int, int]]:
    """Where (top, left) the tile, upscaled by scale, lies in the picture: every exact match."""
    tile = np.kron(tile, np.ones((scale, scale), np.uint8))
    height, width = tile.shape
    rows = np.lib.stride_tricks.sliding_window_view(picture, width, axis=1)  # H x (W-w+1) x w
    candidates = np.argwhere((rows[: picture.shape[0] - height + 1] == tile[0]).all(axis=2))
    return [
        (int(top), int(left))
        for top, left in candidates
        if np.array_equal(picture[top : top + height, left : left + width], tile)
    ]


def by_distance(dataset, model, cluster: int) -> np.ndarray:
    """The members of a cluster, nearest to its centre first."""
    members = np.flatnonzero(model.labels_ == cluster)
    distances = np.linalg.norm(dataset.all_pixel[members] - model.cluster_centers_[cluster], axis=1)
    return members[np.argsort(distances, kind="stable")]


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
        "typical.png",
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
    representatives = np.clip(np.rint(model.cluster_centers_), 0, 255).astype(np.uint8).reshape(3, 28, 28)
    places = [find_tile(sheet, representative, scale=4) for representative in representatives]
    assert all(len(place) == 1 for place in places), "each representative once, 4x upscaled"
    (top, first), (_, second), (_, third) = (place[0] for place in places)
    assert top > 20, "a title above the tiles"
    assert first < second < third, "in cluster order"
    assert (sheet[top + 112 : top + 112 + 16, first : first + 112] < 128).any(), "a caption under each tile"


def test_cluster_grid_shows_nearest_then_farthest_members(tmp_path):
    dataset = make_dataset(labelled=False)
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model, samples=4)
    for cluster in range(3):
        members = by_distance(dataset, model, cluster)
        grid = read_png(folder / "clusters" / f"cluster_{cluster + 1:02d}.png")
        shown = members if len(members) <= 4 else np.concatenate([members[:2], members[-2:]])
        places = [find_tile(grid, dataset.images[index], scale=2) for index in shown]
        assert all(len(place) == 1 for place in places), "each shown member once, 2x upscaled"
        assert sorted(places) == places, "nearest first, farthest last"
        hidden = [index for index in members if index not in shown]
        assert not any(find_tile(grid, dataset.images[index], scale=2) for index in hidden)


def test_cluster_grid_shows_members_of_other_classes_with_their_class(tmp_path):
    dataset = make_dataset(n=200)
    model = fit_stand_in(dataset, 2)
    folder = write(tmp_path, dataset, model, samples=8)
    summary = json.loads((folder / "summary.json").read_text())
    for cluster in range(2):
        matched = summary["cluster_classes"]["clusters"][cluster]["class"]
        members = by_distance(dataset, model, cluster)
        grid = read_png(folder / "clusters" / f"cluster_{cluster + 1:02d}.png")
        found = [index for index in members if find_tile(grid, dataset.images[index], scale=2)]
        assert len(found) == 8
        assert set(found[:4]) == set(members[:4]) and set(found[-2:]) <= set(members[-2:]) | set(found)
        others = [index for index in found if index not in members[:4] and index not in members[-2:]]
        assert len(others) == 2 and all(dataset.labels[index] != matched for index in others)


@pytest.mark.parametrize("labelled", [False, True])
def test_grid_members_stay_within_samples_without_repeats(labelled):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 500)
    for size in (0, 1, 5, 40, 500):
        members = rng.permutation(500)[:size]
        for samples in (1, 2, 7, 64):
            shown = kfolder.grid_members(
                members, samples, labels if labelled else None, 0 if labelled else None
            )
            every = np.concatenate(list(shown.values()))
            assert len(every) == min(samples, size) or (labelled and len(every) <= min(samples, size))
            assert len(set(every.tolist())) == len(every) and set(every.tolist()) <= set(members.tolist())
            assert np.array_equal(shown["nearest"], members[: len(shown["nearest"])])
            if len(shown["farthest"]):
                assert np.array_equal(shown["farthest"], members[len(members) - len(shown["farthest"]) :])
            assert (labels[shown["other"]] != 0).all()


def test_default_grid_shows_64_members(tmp_path):
    dataset = make_dataset(n=100, labelled=False)
    model = fit_stand_in(dataset, 2, empty_last=True)  # all 100 in cluster 1
    grid = read_png(write(tmp_path, dataset, model) / "clusters" / "cluster_01.png")
    found = [index for index in range(100) if find_tile(grid, dataset.images[index], scale=2)]
    members = by_distance(dataset, model, 0)
    assert set(found) == set(members[:32]) | set(members[-32:])


def test_no_clusters_folder_without_samples(tmp_path):
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model, samples=0)
    assert not (folder / "clusters").exists()
    assert (write(tmp_path, dataset, model, samples=0, export_members=True) / "clusters").is_dir()


@pytest.mark.parametrize("block_rows", [None, 7], ids=["one-block", "blocks-of-7"])
def test_assignments_csv_rows(tmp_path, monkeypatch, block_rows):
    if block_rows is not None:  # written a block of rows at a time: the same rows, numbered on
        monkeypatch.setattr(output, "ASSIGNMENT_BLOCK_ROWS", block_rows)
    dataset = make_dataset()
    model = fit_stand_in(dataset, 3)
    folder = write(tmp_path, dataset, model)
    matched = json.loads((folder / "summary.json").read_text())["cluster_classes"]["clusters"]
    with open(folder / "assignments.csv", newline="") as file:
        reader = csv.reader(file)
        assert next(reader) == ["index", "label", "cluster", "distance", "matched_class", "matched_name"]
        rows = list(reader)
    assert len(rows) == len(dataset.images)
    expected_distances = np.linalg.norm(dataset.all_pixel - model.cluster_centers_[model.labels_], axis=1)
    for index, (text_index, label, cluster, distance, matched_class, matched_name) in enumerate(rows):
        assert int(text_index) == index
        assert int(label) == dataset.labels[index]
        assert int(cluster) == model.labels_[index] + 1
        assert float(distance) == pytest.approx(expected_distances[index], rel=1e-5)
        assert int(matched_class) == matched[int(cluster) - 1]["class"]
        assert matched_name == FASHION_NAMES[int(matched_class)]


def test_assignments_csv_quotes_class_names_that_need_it(tmp_path):
    names = {0: "coat, long", 1: 'say "hi"', 2: "plain", 3: "x", 4: "y"}
    dataset = FakeDataset("files", make_dataset().images, make_dataset().labels, names)
    model = fit_stand_in(dataset, 3)
    with open(write(tmp_path, dataset, model) / "assignments.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert {row["matched_name"] for row in rows} <= set(names.values())
    assert all(row["matched_name"] == names[int(row["matched_class"])] for row in rows)


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
    matching = summary["cluster_classes"]
    assert matching["method"] == "hungarian"  # K=3 <= 5 classes: one-to-one
    assert [entry["cluster"] for entry in matching["clusters"]] == [1, 2, 3]
    assert len({entry["class"] for entry in matching["clusters"]}) == 3
    for entry, row in zip(matching["clusters"], table, strict=True):
        column = list(classes).index(entry["class"])
        assert entry["name"] == FASHION_NAMES[entry["class"]]
        assert entry["share"] == pytest.approx(row[column] / row.sum(), abs=1e-4)
    correct = sum(
        row[list(classes).index(entry["class"])]
        for entry, row in zip(matching["clusters"], table, strict=True)
    )
    assert correct / table.sum() == pytest.approx(scores["accuracy"])


def test_more_clusters_than_classes_use_the_majority_class(tmp_path):
    dataset = make_dataset(n=120)
    model = fit_stand_in(dataset, 8)
    summary = json.loads((write(tmp_path, dataset, model) / "summary.json").read_text())
    table = np.array(summary["confusion"]["counts"])
    assert summary["cluster_classes"]["method"] == "majority"
    for entry, row in zip(summary["cluster_classes"]["clusters"], table, strict=True):
        assert row[entry["class"]] == row.max()


def test_unlabelled_16px_run_has_no_metrics_and_no_confusion(tmp_path):
    dataset = make_dataset(name="usps", n=40, shape=(16, 16), labelled=False)
    model = fit_stand_in(dataset, 2)
    folder = write(tmp_path, dataset, model, metrics={"purity": 1.0})
    assert not (folder / "confusion.png").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert "metrics" not in summary and "confusion" not in summary and "cluster_classes" not in summary
    assert summary["image_shape"] == [16, 16]
    assert read_png(folder / "centroids" / "centroid_01.png").shape == (16, 16)
    sheet = read_png(folder / "centroids.png")
    assert len(find_tile(sheet, read_png(folder / "centroids" / "centroid_02.png"), scale=7)) == 1
    with open(folder / "assignments.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 40 and {row["label"] for row in rows} == {""}
    assert [int(row["cluster"]) for row in rows] == (model.labels_ + 1).tolist()
    assert {row["matched_class"] for row in rows} == {row["matched_name"] for row in rows} == {""}


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
        assert int(stored["format_version"]) == MODEL_FORMAT_VERSION


def test_load_model_predicts_like_the_saved_model(tmp_path):
    pytest.importorskip(
        "kmeans_mnist.engine.estimator", reason="kmeans.py is not written yet; load_model needs its KMeans"
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

    monkeypatch.setattr(kfolder, "draw_confusion", fail)
    with pytest.raises(type(error)):
        write(tmp_path, dataset, fit_stand_in(dataset, 3, seed=2))
    assert snapshot(folder) == before
    assert hidden_entries(folder.parent) == []


def test_failed_first_run_leaves_nothing(tmp_path, monkeypatch):
    dataset = make_dataset()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_assignments", fail)
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

    monkeypatch.setattr(atomic.os, "rename", rename_then_fail)
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
