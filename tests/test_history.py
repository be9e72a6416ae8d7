"""FitHistory: every iteration recorded, a bounded number of frames, the kept restart's frames."""

import csv

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist.engine.lloyd import IterationInfo, fit
from kmeans_mnist.render.pictures import save_evolution_gif
from kmeans_mnist.results import history
from kmeans_mnist.results.history import FitHistory, read_history


def info(run, iteration, centers, inertia=100.0):
    return IterationInfo(run, iteration, inertia, 5, 0.5, centers, 0.01)


def test_every_iteration_is_a_row_and_frames_stay_bounded(tmp_path):
    recorder = FitHistory((2, 2))
    rng = np.random.default_rng(0)
    steps = [rng.uniform(0, 255, (3, 4)) for _ in range(500)]
    for iteration, centers in enumerate(steps, start=1):
        recorder(info(0, iteration, centers, inertia=1000.0 - iteration))
    recorder.write_csv(tmp_path / "history.csv")
    rows = list(csv.DictReader((tmp_path / "history.csv").read_text(encoding="ascii").splitlines()))
    assert [int(row["iteration"]) for row in rows] == list(range(1, 501))
    assert {row["run"] for row in rows} == {"1"} and float(rows[-1]["inertia"]) == 500.0
    frames = recorder.kept_frames(steps[-1])
    assert len(frames) <= history.MAX_FRAMES + 1
    assert frames[0][0].startswith("iteration 1 ") and frames[-1][0].startswith("iteration 500 ")
    numbers = [int(caption.split()[1]) for caption, _ in frames]
    assert numbers == sorted(numbers) and len(set(np.diff(numbers[:-1]))) == 1, "evenly thinned"
    assert np.array_equal(
        frames[-1][1], np.clip(np.rint(steps[-1]), 0, 255).astype(np.uint8).reshape(3, 2, 2)
    )


def test_the_restart_the_model_kept_gives_the_frames():
    recorder = FitHistory((1, 2))
    best = np.array([[1.0, 2.0], [3.0, 4.0]])
    other = np.array([[9.0, 9.0], [8.0, 8.0]])
    recorder(info(0, 1, other, inertia=50.0))
    recorder(info(1, 1, best + 1, inertia=40.0))
    recorder(info(1, 2, best, inertia=30.0))
    recorder(info(2, 1, other, inertia=60.0))
    frames = recorder.kept_frames(best)
    assert [caption.split(" · ")[:2] for caption, _ in frames] == [
        ["restart 2", "iteration 1"],
        ["restart 2", "iteration 2"],
    ]
    assert FitHistory((1, 2)).kept_frames(best) == [], "nothing recorded, no frames"
    stranger = FitHistory((1, 2))
    stranger(info(0, 1, other))
    assert stranger.kept_frames(best) == [], "frames of centres the model does not have are not shown"


def test_a_real_fit_leaves_a_gif_of_its_representatives(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (300, 16), dtype=np.uint8)
    recorder = FitHistory((4, 4))
    model = fit(X, 4, n_init=2, random_state=0, callback=recorder)
    frames = recorder.kept_frames(model.cluster_centers_)
    assert frames
    save_evolution_gif(tmp_path / "evolution.gif", frames, "title")
    with Image.open(tmp_path / "evolution.gif") as gif:
        assert gif.n_frames == min(model.n_iter_, history.MAX_FRAMES + 1)
    recorder.write_csv(tmp_path / "history.csv")
    kept = read_history(tmp_path / "history.csv")
    assert kept is not None and len(kept["iteration"]) == model.n_iter_
    assert kept["inertia"][-1] == pytest.approx(model.inertia_, rel=1e-3)


def test_read_history_refuses_what_it_cannot_read(tmp_path):
    path = tmp_path / "history.csv"
    assert read_history(path) is None
    path.write_text("run,iteration\n1,1\n", encoding="ascii")
    assert read_history(path) is None
    path.write_text("run,iteration,inertia,moved,center_shift,seconds\n1,x,2,3,4,5\n", encoding="ascii")
    assert read_history(path) is None
