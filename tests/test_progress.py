"""What the terminal shows while a run works: every phase on a terminal, nothing extra in a log,
each K's line as soon as that K is saved."""

from __future__ import annotations

import io
import sys

import pytest

from cli_support import write_kaggle
from kmeans_mnist import cli
from kmeans_mnist.cli import sweep
from kmeans_mnist.cli.progress import Terminal
from kmeans_mnist.engine.lloyd import InitProgress, IterationInfo


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    write_kaggle(tmp_path / "data", n_train=40, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    return tmp_path


def iteration(run: int, number: int) -> IterationInfo:
    return IterationInfo(run, number, 1e6 / number, 10, 0.1)


def test_restarts_count_iterations_from_one_and_initialisation_counts_centres():
    stream = FakeTerminal()
    terminal = Terminal(stream=stream, n_init=2)
    with terminal.fit(7) as progress:
        for chosen in range(1, 8):
            progress.initialisation(InitProgress(0, chosen, 7))
        assert progress.bar.n == 7 and progress.bar.total == 7
        for number in range(1, 6):
            progress(iteration(0, number))
        assert progress.bar.n == 5
        progress.initialisation(InitProgress(1, 1, 7))
        progress(iteration(1, 1))
        assert progress.bar.n == 1, "the second restart counts from 1"
    progress.writing(3, 10)
    assert progress.bar.n == 3 and progress.bar.total == 10
    progress.writing(10, 10)
    assert progress.bar is None and stream.getvalue().endswith("K=7: saving the folder and the summary ...")
    terminal.done()
    assert progress.bar is None
    text = stream.getvalue()
    for phase in (
        "K=7 restart 1/2: k-means++",
        "K=7 restart 1/2: iteration",
        "K=7 restart 2/2: k-means++",
        "K=7 restart 2/2: iteration",
        "K=7: scoring",
        "K=7: writing files",
    ):
        assert phase in text, phase
    assert "centres/s" in text


def test_no_bars_and_no_phase_lines_without_a_terminal():
    stream = io.StringIO()
    terminal = Terminal(stream=stream)
    terminal.phase("loading usps")
    with terminal.fit(3) as progress:
        assert progress is None  # the engine gets no progress callback at all
    terminal.say("loaded 5 images")
    assert stream.getvalue() == "loaded 5 images\n"
    quiet = Terminal(quiet=True, stream=FakeTerminal())
    quiet.say("nothing")
    with quiet.fit(3) as progress:
        assert progress is None
    assert quiet.stream.getvalue() == ""


def test_a_run_on_a_terminal_shows_every_phase(small_data, monkeypatch, capsys):
    stream = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stream)
    assert cli.main(["3", "2", "--data-dir", "data", "--n-init", "2", "--output", "out"]) == 0
    text = stream.getvalue()
    for phase in (
        "loading mnist ...",
        "loaded 60 images",
        "K=3 restart 1/2: k-means++",
        "K=3 restart 2/2: iteration",
        "K=3: writing files",
        "K=2 restart 1/2: k-means++",
        "drawing the sweep's pictures and report.html ...",
    ):
        assert phase in text, phase
    assert text.endswith("\x1b[2K\r"), "the last phase line is cleared"
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[-1] == (
        "summary: out/mnist-ninit2/summary.csv, chart: out/mnist-ninit2/k-choice.png, "
        "table: out/mnist-ninit2/results.md, report: out/mnist-ninit2/report.html"
    )


def test_each_k_is_reported_as_soon_as_it_is_saved(small_data, monkeypatch, capsys):
    seen_before_writing: dict[int, str] = {}
    real_write_k_files = sweep.write_k_files

    def write_k_files(folder, data, model, **options):
        k = len(model.cluster_centers_)
        seen_before_writing[k] = capsys.readouterr().out
        sys.stdout.write(seen_before_writing[k])  # keep it for the end
        return real_write_k_files(folder, data, model, **options)

    monkeypatch.setattr(sweep, "write_k_files", write_k_files)
    assert cli.main(["4", "3", "2", "--data-dir", "data", "--output", "out"]) == 0
    assert "out/mnist/k4" not in seen_before_writing[4]
    assert "out/mnist/k4" in seen_before_writing[3] and "out/mnist/k3" not in seen_before_writing[3]
    assert "out/mnist/k3" in seen_before_writing[2]
