"""Results of your own images: file names in assignments.csv, predict's output and the cluster
grids; colour pictures for colour data; the model records channels and resize, and predict
refuses the other kind and fits other sizes as the fit did."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kmeans_mnist import cli

AWKWARD = [
    "a,b.png",
    'say "hi".png',
    "new\nline.png",
    "ünïcødé 字.png",
    "<img src=x onerror=alert(1)>.png",
    "semi;colon 'quote'.png",
    "carriage\rreturn.png",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))


def two_colours(root, per_class: int = 12, side: int = 8, seed: int = 0, names=None):
    """Two class folders of colour tiles: reddish and bluish noise of the same brightness."""
    rng = np.random.default_rng(seed)
    written = []
    for label, folder in enumerate(("reds", "blues")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            tile = rng.normal(128, 30, (side, side, 3))
            tile[..., 0 if label == 0 else 2] += 60
            tile[..., 2 if label == 0 else 0] -= 60
            name = names[index % len(names)] if names and index < len(names) else f"{index:03d}.png"
            Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8)).save(root / folder / name)
            written.append(f"{folder}/{name}")
    return written


def main(*args: str) -> int:
    return cli.main([*args, "--quiet"] if args[0] != "predict" else list(args))


def test_colour_folder_with_awkward_names_end_to_end(tmp_path, capsys):
    written = two_colours(tmp_path / "photos", per_class=8, names=AWKWARD)  # 8: all in the tooltips
    assert main("2", "--dataset", "files", "--data-dir", "photos", "--output", "out") == 0
    k2 = tmp_path / "out" / "photos" / "k2"

    with open(k2 / "assignments.csv", encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["path"] for row in rows) == sorted(written)
    assert [int(row["index"]) for row in rows] == list(range(len(written)))
    frame = pd.read_csv(k2 / "assignments.csv", keep_default_na=False)
    assert list(frame.columns[:3]) == ["index", "path", "label"]
    assert sorted(frame["path"]) == sorted(written)
    by_path = {row["path"]: row["label"] for row in rows}
    assert all(by_path[path] == ("1" if path.startswith("reds/") else "0") for path in written)
    assert len({row["cluster"] for row in rows if row["path"].startswith("reds/")}) == 1  # colour separates

    with Image.open(k2 / "centroids.png") as sheet:
        assert sheet.mode == "RGB"
    with Image.open(k2 / "centroids" / "centroid_01.png") as centroid:
        assert centroid.mode == "RGB" and centroid.size == (8, 8)
        pixels = np.asarray(centroid, dtype=int)
    assert abs(pixels[..., 0].mean() - pixels[..., 2].mean()) > 60  # a red or a blue representative
    with Image.open(k2 / "clusters" / "cluster_01.png") as grid:
        colours = np.asarray(grid.convert("RGB"), dtype=int)
        assert np.abs(colours[..., 0] - colours[..., 2]).max() > 60
    with Image.open(k2 / "evolution.gif") as gif:
        frame_rgb = np.asarray(gif.convert("RGB"), dtype=int)
        assert np.abs(frame_rgb[..., 0] - frame_rgb[..., 2]).max() > 60
    with Image.open(tmp_path / "out" / "photos" / "representatives_by_k.png") as side:
        side_rgb = np.asarray(side.convert("RGB"), dtype=int)
        assert np.abs(side_rgb[..., 0] - side_rgb[..., 2]).max() > 60

    with np.load(k2 / "model.npz") as model:
        assert int(model["channels"]) == 3 and model["cluster_centers"].shape == (2, 8 * 8 * 3)
        assert "resize" not in model.files  # no --size: nothing was fitted
    assert json.loads((k2 / "summary.json").read_text())["channels"] == 3
    report = (tmp_path / "out" / "photos" / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in report  # the awkward name is text, escaped
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in report and 'title="nearest: ' in report
    with np.load(k2 / "map.npz", allow_pickle=False) as sample:  # the interactive map's tooltips
        assert sample["images"].shape[1:] == (8, 8, 3) and sorted(sample["path"]) == sorted(written)
    assert "\\u003cimg src=x onerror=alert(1)\\u003e.png" in report  # names in the map's JSON, inert
    nearest = json.loads((k2 / "summary.json").read_text())["nearest_files"]
    assert len(nearest) == 2 and all(len(names) == 8 for names in nearest)
    assert {name.split("/")[0] for name in nearest[0]} | {name.split("/")[0] for name in nearest[1]} == {
        "reds",
        "blues",
    }

    capsys.readouterr()
    assert main("predict", str(k2 / "model.npz"), "photos", "--output", "new.csv") == 0
    predicted = pd.read_csv("new.csv", keep_default_na=False)
    assert list(predicted.columns) == ["index", "path", "label", "cluster", "distance"]
    assert list(predicted["path"]) == list(frame["path"])
    assert list(predicted["cluster"]) == list(frame["cluster"])  # the fit's own clusters
    capsys.readouterr()

    assert main("predict", str(k2 / "model.npz"), "photos", "--grey", "--output", "grey.csv") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "model of colour (RGB) images" in error and "grey" in error
    assert not (tmp_path / "grey.csv").exists()


def test_grey_model_refuses_colour_images_and_grey_flag_fits(tmp_path, capsys):
    two_colours(tmp_path / "photos")
    assert main("2", "--dataset", "files", "--data-dir", "photos", "--grey", "--output", "out") == 0
    model = tmp_path / "out" / "photos-grey" / "k2" / "model.npz"
    with np.load(model) as stored:
        assert int(stored["channels"]) == 1
    assert main("predict", str(model), "photos") == 2
    error = capsys.readouterr().err.strip()
    assert "model of grey images" in error and "add --grey" in error and "\n" not in error
    assert main("predict", str(model), "photos", "--grey", "--output", "p.csv") == 0


def test_loading_line_says_colour_or_grey(tmp_path, capsys):
    two_colours(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert cli.main(["2", "--dataset", "files", "--data-dir", "photos", "--output", "out"]) == 0
    err = capsys.readouterr().err
    assert "loaded 24 images of 8x8, colour, from photos" in err and "1 non-image file skipped" in err
    assert cli.main(["2", "--dataset", "files", "--data-dir", "photos", "--grey", "--output", "out"]) == 0
    assert "loaded 24 images of 8x8, converted to grey, from photos" in capsys.readouterr().err


def test_named_dataset_has_no_path_column(tmp_path):
    assert main("3", "--dataset", "usps", "--limit", "60", "--samples", "0", "--output", "out") == 0
    header = (tmp_path / "out" / "usps-limit60" / "k3" / "assignments.csv").read_text().splitlines()[0]
    assert header == "index,label,cluster,distance,matched_class,matched_name"
    with np.load(tmp_path / "out" / "usps-limit60" / "k3" / "model.npz") as stored:
        assert int(stored["channels"]) == 1


def test_predict_fits_other_sizes_as_the_fit_did(tmp_path, capsys):
    rng = np.random.default_rng(5)
    (tmp_path / "train").mkdir()
    for index in range(10):  # 12 tall, 24 wide: --size 12x12 --resize pad gives black bands
        tile = np.zeros((12, 24), np.uint8)
        tile[:, 6 * (index % 2) : 6 * (index % 2) + 12] = rng.integers(100, 256, (12, 12))
        Image.fromarray(tile).save(tmp_path / "train" / f"{index}.png")
    Image.fromarray(np.full((12, 12), 200, np.uint8)).save(tmp_path / "train" / "square.png")
    args = ["2", "--dataset", "files", "--data-dir", "train", "--size", "12x12", "--resize", "pad"]
    assert main(*args, "--output", "out") == 0
    k2 = tmp_path / "out" / "train-pad" / "k2"
    with np.load(k2 / "model.npz") as stored:
        assert str(stored["resize"]) == "pad"
    assert main("predict", str(k2 / "model.npz"), "train", "--output", "p.csv") == 0
    fitted = pd.read_csv(k2 / "assignments.csv", keep_default_na=False)
    predicted = pd.read_csv("p.csv", keep_default_na=False)
    assert list(predicted["path"]) == list(fitted["path"])
    np.testing.assert_allclose(predicted["distance"], fitted["distance"], rtol=1e-5)
    stretched = ["predict", str(k2 / "model.npz"), "train", "--resize", "stretch", "--output", "s.csv"]
    assert main(*stretched) == 2  # --resize needs --size, in predict too
    assert "--resize stretch needs --size" in capsys.readouterr().err


def test_resize_without_size_and_grey_on_a_named_dataset_are_refused(tmp_path, capsys):
    assert cli.main(["2", "--dataset", "usps", "--grey"]) == 2
    assert "--grey applies only to your own files" in capsys.readouterr().err
    assert cli.main(["2", "--dataset", "files", "--data-dir", ".", "--resize", "pad"]) == 2
    assert "--resize pad needs --size HxW" in capsys.readouterr().err


# --- --export-members link|copy ------------------------------------------------------------------


def many_small_files(root, count: int) -> list[str]:
    """count 4x4 grey PNGs in two class folders, the same names in both (clashes once clustered)."""
    rng = np.random.default_rng(9)
    names = []
    for label, folder in enumerate(("dark", "light")):
        (root / folder).mkdir(parents=True)
        for index in range(count // 2):
            tile = rng.integers(0, 100, (4, 4)) + 150 * label + 1
            Image.fromarray(tile.astype(np.uint8)).save(root / folder / f"{index:04d}.png")
            names.append(f"{folder}/{index:04d}.png")
    return names


def snapshot(root) -> dict[str, tuple]:
    return {
        str(path.relative_to(root)): (path.stat().st_mtime_ns, path.stat().st_ino, path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("how", ["link", "copy"])
def test_export_members_puts_the_original_files_in_their_clusters(tmp_path, how):
    names = many_small_files(tmp_path / "pics", 2000)
    before = snapshot(tmp_path / "pics")
    assert (
        main(
            "1",
            "--dataset",
            "files",
            "--data-dir",
            "pics",
            "--samples",
            "0",
            "--export-members",
            how,
            "--output",
            "out",
        )
        == 0
    )
    assert snapshot(tmp_path / "pics") == before  # originals never touched
    exported = sorted((tmp_path / "out" / "pics" / "k1" / "clusters" / "01").iterdir())
    assert len(exported) == len(names)  # the clashing names (dark/0001.png, light/0001.png) both kept
    assert {path.name for path in exported if "~" not in path.name} == {name.split("/")[1] for name in names}
    assert sum("~2" in path.name for path in exported) == len(names) // 2
    assert all(path.is_symlink() == (how == "link") for path in exported)
    if how == "link":
        assert {str(path.resolve().relative_to(tmp_path / "pics")) for path in exported} == set(names)
    originals = sorted(entry[2] for entry in before.values())
    assert sorted(path.read_bytes() for path in exported) == originals  # every file, none lost
    rows = pd.read_csv(tmp_path / "out" / "pics" / "k1" / "assignments.csv", keep_default_na=False)
    assert sorted(rows["path"]) == sorted(names)


def test_export_members_links_fall_back_to_copies(tmp_path, monkeypatch):
    many_small_files(tmp_path / "pics", 20)

    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("os.symlink", no_links)
    assert (
        main(
            "2",
            "--dataset",
            "files",
            "--data-dir",
            "pics",
            "--samples",
            "0",
            "--export-members",
            "--output",
            "out",
        )
        == 0
    )
    exported = list((tmp_path / "out" / "pics" / "k2" / "clusters").rglob("*.png"))
    assert len(exported) == 20 and not any(path.is_symlink() for path in exported)


def test_export_members_of_a_named_dataset_stays_png_by_index(tmp_path):
    assert (
        main(
            "2",
            "--dataset",
            "usps",
            "--limit",
            "30",
            "--samples",
            "0",
            "--export-members",
            "link",
            "--output",
            "out",
        )
        == 0
    )
    exported = sorted((tmp_path / "out" / "usps-limit30" / "k2" / "clusters").rglob("*.png"))
    assert len(exported) == 30 and all(path.stem.isdigit() and not path.is_symlink() for path in exported)


# --- --replace -----------------------------------------------------------------------------------


def test_replace_moves_the_old_experiment_aside_and_only_when_asked(tmp_path, capsys):
    many_small_files(tmp_path / "digits", 20)
    args = ["2", "--dataset", "files", "--data-dir", "digits", "--samples", "0", "--output", "out"]
    assert main(*args) == 0
    old = (tmp_path / "out" / "digits" / "k2" / "assignments.csv").read_text()
    (tmp_path / "digits" / "dark" / "0003.png").unlink()  # the folder changed: other data
    capsys.readouterr()
    assert main(*args) == 2
    error = capsys.readouterr().err.strip()
    assert "other data or settings" in error and "--replace" in error and "\n" not in error
    assert (tmp_path / "out" / "digits" / "k2" / "assignments.csv").read_text() == old  # refused: untouched
    assert main(*args, "--replace") == 0
    said = capsys.readouterr().err
    [aside] = [path for path in (tmp_path / "out").iterdir() if path.name.startswith("digits.replaced-")]
    assert f"moved it to {Path('out') / aside.name}" in said
    assert (aside / "k2" / "assignments.csv").read_text() == old  # the old results, whole
    assert (aside / "summary.csv").is_file()
    new = pd.read_csv(tmp_path / "out" / "digits" / "k2" / "assignments.csv", keep_default_na=False)
    assert len(new) == 19 and "dark/0003.png" not in set(new["path"])
    assert main(*args, "--replace") == 0  # same data now: nothing is moved
    assert len([path for path in (tmp_path / "out").iterdir() if ".replaced-" in path.name]) == 1


def test_predict_stretches_other_sizes_for_a_model_fitted_without_size(tmp_path):
    two_colours(tmp_path / "photos")
    assert main("2", "--dataset", "files", "--data-dir", "photos", "--output", "out") == 0
    (tmp_path / "bigger").mkdir()
    for name in ("reds", "blues"):
        with Image.open(tmp_path / "photos" / name / "000.png") as tile:
            tile.resize((16, 24), Image.Resampling.NEAREST).save(tmp_path / "bigger" / f"{name}.png")
    model = tmp_path / "out" / "photos" / "k2" / "model.npz"
    assert main("predict", str(model), "bigger", "--output", "p.csv") == 0
    predicted = pd.read_csv("p.csv", keep_default_na=False).set_index("path")["cluster"]
    fitted = pd.read_csv(model.parent / "assignments.csv", keep_default_na=False).set_index("path")["cluster"]
    assert (
        predicted["reds.png"] == fitted["reds/000.png"] and predicted["blues.png"] == fitted["blues/000.png"]
    )
