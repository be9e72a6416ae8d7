"""Ctrl-C (SIGINT): exit code 130, one line saying so, no partial files, earlier results intact.

The subprocess tests interrupt a real run at a known stage: first a complete run of the same K,
then a rerun that is interrupted during its fit (after the `loaded` line) or during its write
(once its temporary folder appears). The in-process tests raise KeyboardInterrupt at the stages
that are too short to hit with a signal.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_support import leftovers, run_cli, snapshot, start_cli, write_fixed_width_mnist, write_kaggle
from kmeans_mnist import cli, datasets, output, summary

K = "20"
N_IMAGES = 4000
WAIT_SECONDS = 60  # for a stage to begin, and for the process to end after the signal


@pytest.fixture(scope="module")
def big_data(tmp_path_factory) -> Path:
    return write_fixed_width_mnist(tmp_path_factory.mktemp("big") / "data", N_IMAGES)


@pytest.fixture
def earlier_run(tmp_path, big_data) -> Path:
    """tmp_path after one complete, quick run of K on the big data (which also fills the parsed cache)."""
    (tmp_path / "data").symlink_to(big_data, target_is_directory=True)
    quick = [
        K,
        "--data-dir",
        "data",
        "--split",
        "train",
        "--max-iter",
        "2",
        "--output",
        "out",
        "--quiet",
        "--samples",
        "2",
    ]
    result = run_cli(quick, tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def stderr_lines(process) -> queue.Queue:
    """A queue receiving the process's stderr line by line (None at the end), read by a thread."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, prefix: str, seen: list[str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            pytest.fail(f"the process ended before printing {prefix!r}: {seen}")
        seen.append(line)
        if line.startswith(prefix):
            return
    pytest.fail(f"no {prefix!r} line within {WAIT_SECONDS}s: {seen}")


def wait_for_path(folder: Path, pattern: str, process) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if any(folder.glob(pattern)):
            return
        if process.poll() is not None:
            pytest.fail(f"the process ended (code {process.returncode}) before {folder / pattern} appeared")
        time.sleep(0.002)
    pytest.fail(f"{folder / pattern} did not appear within {WAIT_SECONDS}s")


def interrupt(process, lines: queue.Queue, seen: list[str]) -> list[str]:
    """SIGINT the process (failing if it already ended); its whole stderr once it has exited."""
    if process.poll() is not None:
        pytest.fail(f"the process finished (code {process.returncode}) before it could be interrupted")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=WAIT_SECONDS)
    except Exception:
        process.kill()
        raise
    while (line := lines.get(timeout=WAIT_SECONDS)) is not None:
        seen.append(line)
    return seen


def check_interrupted(code: int, stderr: list[str], workdir: Path, before: dict) -> None:
    assert code == 130, stderr
    assert not any("Traceback" in line for line in stderr), stderr
    assert stderr and stderr[-1].startswith("interrupted"), stderr
    assert sum("interrupted" in line for line in stderr) == 1
    assert not any(line.startswith("error:") for line in stderr), stderr
    assert snapshot(workdir) == before, "files changed"
    assert leftovers(workdir) == []


def test_sigint_during_the_fit(earlier_run):
    before = snapshot(earlier_run)
    slow = [
        K,
        "--data-dir",
        "data",
        "--split",
        "train",
        "--max-iter",
        "300",
        "--tol",
        "0",
        "--n-init",
        "500",
        "--output",
        "out",
    ]
    process = start_cli(slow, earlier_run)
    lines, seen = stderr_lines(process), []
    wait_for_line(lines, "loaded ", seen)
    time.sleep(0.3)  # well inside the fit: 500 restarts take far longer
    stderr = interrupt(process, lines, seen)
    assert process.stdout.read() == ""  # no table
    check_interrupted(process.returncode, stderr, earlier_run, before)


def test_sigint_during_the_write(earlier_run):
    before = snapshot(earlier_run)
    exporting = [
        K,
        "--data-dir",
        "data",
        "--split",
        "train",
        "--max-iter",
        "2",
        "--export-members",
        "--output",
        "out",
    ]
    process = start_cli(exporting, earlier_run)
    lines, seen = stderr_lines(process), []
    wait_for_path(earlier_run / "out" / "mnist", f".k{K}.tmp-*", process)
    stderr = interrupt(process, lines, seen)
    check_interrupted(process.returncode, stderr, earlier_run, before)


# --- in-process: stages too short to hit with a signal ----------------------------------------


def raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture
def small_run(tmp_path, monkeypatch, capsys) -> Path:
    """tmp_path as the current folder, after one complete run of K=3 on small data."""
    write_kaggle(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (datasets, "_read_csv_cached"),  # while loading
        (output, "save_png"),  # while writing the files of K
        (output, "_swap_into_place"),  # just before the new folder replaces the old one
    ],
    ids=["load", "write", "swap"],
)
def test_interrupt_at_each_stage(small_run, monkeypatch, capsys, module, name):
    monkeypatch.setattr(module, name, raise_interrupt)
    before = snapshot(small_run / "out")
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    stderr = capsys.readouterr().err.splitlines()
    assert stderr[-1].startswith("interrupted") and len(stderr) <= 2, (
        stderr
    )  # after the "loaded" line, if any
    assert snapshot(small_run / "out") == before
    assert leftovers(small_run) == []


def test_interrupt_inside_the_progress_bar(small_run, monkeypatch, capsys):
    """With a terminal, the fit reports to tqdm; Ctrl-C inside tqdm ends the same way, bar closed."""
    tqdm = pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(tqdm.tqdm, "update", raise_interrupt)
    before = snapshot(small_run / "out")
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    assert not tqdm.tqdm._instances, "the progress bar was left open"
    assert capsys.readouterr().err.splitlines()[-1].startswith("interrupted")
    assert snapshot(small_run / "out") == before


def test_ctrl_c_while_updating_the_summary_waits_for_it(small_run, monkeypatch, capsys):
    """Once the new k<K> folder is in place, its summary row follows it: Ctrl-C takes effect after."""
    real_draw = summary.draw_elbow

    def draw_with_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        real_draw(*args, **kwargs)

    monkeypatch.setattr(summary, "draw_elbow", draw_with_ctrl_c)
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    assert capsys.readouterr().err.splitlines()[-1].startswith("interrupted")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = json.loads((small_run / "out" / "mnist" / "k3" / "summary.json").read_text())
    with open(small_run / "out" / "mnist" / "summary.csv", newline="") as file:
        [row] = list(csv.DictReader(file))
    assert saved["seed"] == 1 and row["seed"] == "1"
    assert float(row["inertia"]) == pytest.approx(saved["inertia"], rel=1e-6)
    assert leftovers(small_run) == []
