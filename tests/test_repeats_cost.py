"""--repeats in the cost checked before any work: R fits, R labellings kept, R(R-1)/2 comparisons."""

from __future__ import annotations

import pytest

from cli_support import isolated_env, snapshot, write_kaggle
from kmeans_mnist import cli
from kmeans_mnist.cli import preflight
from kmeans_mnist.engine import lloyd as engine


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    write_kaggle(tmp_path / "data", n_train=20, n_test=10)
    for name, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def never_fit(*args, **kwargs):
    raise AssertionError("a fit started")


def test_a_billion_repeats_are_refused_before_any_work(workdir, monkeypatch, capsys):
    monkeypatch.setattr(engine, "fit", never_fit)
    monkeypatch.setattr(preflight, "available_memory", lambda: 8 * 2**30)
    before = snapshot(workdir)
    code = cli.main(["3", "--data-dir", "data", "--repeats", "1000000000", "--output", "out"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --repeats 1,000,000,000 keeps") and "use --repeats <= " in err[0]
    most = int(err[0].rsplit("<= ", 1)[1].replace(",", ""))
    n, d = 30, 784
    fit_bytes = engine.estimate(n, d, 3, dtype="uint8").bytes
    assert fit_bytes + preflight.repeats_cost(n, d, 3, most)[0] <= 8 * 2**30  # the advice fits
    assert fit_bytes + preflight.repeats_cost(n, d, 3, most + 1)[0] > 8 * 2**30
    assert snapshot(workdir) == before


def test_repeats_whose_stability_takes_hours_are_announced(workdir, monkeypatch, capsys):
    """The fits are quick; comparing 3,000 repeats pairwise (4.5 million pairs) is not."""
    monkeypatch.setattr(preflight, "STABILITY_SECONDS_PER_ROW", 1e-3)  # 4.5 M pairs x 30 rows: 37 hours
    monkeypatch.setattr(preflight, "available_memory", lambda: 64 * 2**30)
    started = []

    def stop(*args, **kwargs):
        started.append(1)
        raise KeyboardInterrupt  # the run is not wanted: as a user's Ctrl-C after the note

    monkeypatch.setattr(engine, "fit", stop)
    code = cli.main(["3", "--data-dir", "data", "--repeats", "3000", "--output", "out"])
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: K=3 will take very long")]
    assert len(notes) == 1, err
    assert "3,000 repeats" in notes[0] and "for the stability" in notes[0] and "Ctrl-C stops it" in notes[0]
    assert code == 130 and started  # announced, then started (and stopped by the stand-in fit)


def test_one_repeat_costs_what_it_did(workdir, monkeypatch, capsys):
    monkeypatch.setattr(engine, "FLOPS_PER_SECOND", 1.0)  # every fit looks like weeks
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--samples", "0"]) == 0
    [note] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert "repeats" not in note and "stability" not in note
