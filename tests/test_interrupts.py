"""Ctrl-C (SIGINT): exit code 130, one line saying so, no partial files, earlier results intact.

The subprocess tests interrupt a real run at a known stage: first a complete run of the same K,
then a rerun that is interrupted during its fit (after the `loaded` line) or during its write
(once its temporary folder appears). The in-process tests raise KeyboardInterrupt at the stages
that are too short to hit with a signal.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_support import (
    isolated_env,
    leftovers,
    run_cli,
    snapshot,
    start_cli,
    write_fixed_width_mnist,
    write_kaggle,
)
from kmeans_mnist import atomic, cli
from kmeans_mnist.data import datasets
from kmeans_mnist.render import kfolder
from kmeans_mnist.results import experiment as summary

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
    wait_for_path(earlier_run / "out" / "mnist-train-maxiter2", f".k{K}.tmp-*", process)
    stderr = interrupt(process, lines, seen)
    check_interrupted(process.returncode, stderr, earlier_run, before)


# --- in-process: stages too short to hit with a signal ----------------------------------------


def raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def raise_wrapped_interrupt(*args, **kwargs):
    """A real Ctrl-C landing while an import creates a class: Python 3.11 raises it out of the
    class's __set_name__ as a RuntimeError (3.12 no longer wraps it)."""

    class Interrupted:
        def __set_name__(self, owner, name):
            signal.raise_signal(signal.SIGINT)

    type("Created", (), {"attribute": Interrupted()})


def raise_interrupt_as_import_error(*args, **kwargs):
    """A real Ctrl-C landing in NumPy's C start-up, which reports it as an ImportError."""
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        raise ImportError('PyCapsule_Import could not import module "datetime"') from None


@pytest.fixture
def small_run(tmp_path, monkeypatch, capsys) -> Path:
    """tmp_path as the current folder, after one complete run of K=3 on small data."""
    write_kaggle(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet"]) == 0
    capsys.readouterr()
    return tmp_path


STAGES = [
    pytest.param(datasets, "_read_csv_cached", raise_interrupt, id="load"),
    pytest.param(kfolder, "save_png", raise_interrupt, id="write"),  # while writing the files of K
    # just before the new folder replaces the old
    pytest.param(atomic, "swap_folder", raise_interrupt, id="swap"),
    # a real Ctrl-C that comes out as another error; the swap holds signals, so not there
    pytest.param(datasets, "_read_csv_cached", raise_wrapped_interrupt, id="load-runtime-error"),
    pytest.param(kfolder, "save_png", raise_wrapped_interrupt, id="write-runtime-error"),
    pytest.param(datasets, "_read_csv_cached", raise_interrupt_as_import_error, id="load-import-error"),
    pytest.param(kfolder, "save_png", raise_interrupt_as_import_error, id="write-import-error"),
]


@pytest.mark.parametrize(("module", "name", "raised"), STAGES)
def test_interrupt_at_each_stage(small_run, monkeypatch, capsys, module, name, raised):
    monkeypatch.setattr(module, name, raised)
    before = snapshot(small_run / "out")
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    stderr = capsys.readouterr().err.splitlines()
    assert stderr[-1].startswith("interrupted") and len(stderr) <= 2, (
        stderr
    )  # after the "loaded" line, if any
    assert snapshot(small_run / "out") == before
    assert leftovers(small_run) == []


def run_as_module() -> int:
    import runpy

    with pytest.raises(SystemExit) as exit:
        runpy.run_module("kmeans_mnist", run_name="__main__")
    return exit.value.code


def run_as_command() -> int:
    """What the installed `kmeans-mnist` script calls."""
    from importlib.metadata import entry_points

    [script] = entry_points(group="console_scripts", name="kmeans-mnist")
    return script.load()()


@pytest.fixture
def sigint_handler_kept():
    """__main__ leaves its hold in place when it returns (its process ends next): put pytest's back."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_handler_kept")
@pytest.mark.parametrize("start", [run_as_module, run_as_command], ids=["python -m", "kmeans-mnist"])
def test_an_interrupt_while_python_imports_the_command_line_is_one_line(monkeypatch, capsys, start):
    """Interrupted while it imports the command line: the one line and 130, no traceback (the
    interrupt is held until the import is whole)."""
    import importlib.abc

    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "kmeans_mnist.cli":
                raise_wrapped_interrupt()

    import kmeans_mnist

    monkeypatch.setattr(kmeans_mnist, "cli", cli)  # the package's attribute comes back with sys.modules'
    monkeypatch.delitem(sys.modules, "kmeans_mnist.cli")
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    assert start() == 130
    assert capsys.readouterr().err == "interrupted: nothing was written\n"
    assert "kmeans_mnist.cli" in sys.modules  # imported whole before the interrupt was let through


def test_an_interrupt_python_drops_in_a_callback_is_delivered_again(small_run, monkeypatch, capsys):
    """A Ctrl-C that lands in one of importlib's weakref callbacks is printed by Python as
    "Exception ignored" and lost, and the run went on to exit 0: it is delivered again instead."""
    import weakref

    real = datasets._read_csv_cached

    def dropped_then_load(*args, **kwargs):
        class Lock:
            pass

        lock = Lock()
        kept = weakref.ref(lock, lambda ref: signal.raise_signal(signal.SIGINT))  # noqa: F841
        del lock  # the callback runs here, and Python can only print what it raises
        time.sleep(0.2)  # the interrupt comes back while the run goes on
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "_read_csv_cached", dropped_then_load)
    before = snapshot(small_run / "out")
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and err.splitlines()[-1].startswith("interrupted: no partial")
    assert snapshot(small_run / "out") == before


def raise_wrapped_sigterm(*args, **kwargs):
    class Terminated:
        def __set_name__(self, owner, name):
            signal.raise_signal(signal.SIGTERM)

    type("Created", (), {"attribute": Terminated()})


def test_a_sigterm_that_comes_out_as_another_error_is_told_as_sigterm(small_run, monkeypatch, capsys):
    monkeypatch.setattr(kfolder, "save_png", raise_wrapped_sigterm)
    before = snapshot(small_run / "out")
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 143
    assert capsys.readouterr().err.splitlines()[-1].startswith("interrupted by SIGTERM: no partial results")
    assert snapshot(small_run / "out") == before


def test_an_error_after_the_interrupt_was_told_adds_no_second_line(small_run, monkeypatch, capsys):
    """What fails after the interrupt's line (a Dask cluster closing, say) is that interrupt."""
    from kmeans_mnist.cli import fit

    def run_then_fail_to_close(args, run):
        run(args)
        raise RuntimeError("the cluster did not close")

    monkeypatch.setattr(kfolder, "save_png", raise_wrapped_interrupt)
    monkeypatch.setattr(cli, "on_scheduler", run_then_fail_to_close)
    assert cli.run is fit.run
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    stderr = capsys.readouterr().err.splitlines()
    assert [line for line in stderr if "interrupted" in line] == [stderr[-1]], stderr


def test_an_interrupt_is_forgotten_when_main_returns(small_run, monkeypatch):
    """A later call in the same process is not taken for interrupted (an error is an error)."""
    from kmeans_mnist.cli import predict
    from kmeans_mnist.cli.preflight import UsageError

    monkeypatch.setattr(kfolder, "save_png", raise_wrapped_interrupt)
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"]) == 130
    monkeypatch.undo()
    with pytest.raises(UsageError, match="model"):
        predict.predict_main(["missing-model.npz", "mnist", "--data-dir", "data"])


HOLD_NUMPY = """
import importlib.abc, signal, sys

class InterruptInsideNumPy(importlib.abc.MetaPathFinder):  # Ctrl-C in the middle of NumPy's import
    def find_spec(self, name, path=None, target=None):
        if name == "numpy._core.multiarray":
            signal.raise_signal(signal.SIGINT)

sys.meta_path.insert(0, InterruptInsideNumPy())
from kmeans_mnist.__main__ import main
code = main()
print("numpy whole:", hasattr(sys.modules.get("numpy"), "ndarray"))
sys.exit(code)
"""


@pytest.mark.parametrize("command", ["fit", "predict"])
def test_a_ctrl_c_inside_numpys_import_waits_until_numpy_is_whole(tmp_path, command):
    """NumPy and the pipeline are imported with the interrupt held: it arrives once they are
    whole, as itself (130, the command's own line, nothing written)."""
    (tmp_path / "run.py").write_text(HOLD_NUMPY)
    args = ["3", "--dataset", "usps", "--output", "out"]
    if command == "predict":
        args = ["predict", "model.npz", "usps", "--output", "p.csv"]
    result = subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 130, result.stderr
    assert result.stdout == "numpy whole: True\n"
    told = "no partial results were written" if command == "fit" else "p.csv was not written"
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if told in line]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kagglehub-cache", "run.py"]


def test_a_run_that_ignores_ctrl_c_keeps_ignoring_it(earlier_run):
    """Started with SIGINT ignored (a job started with & from a script), the tool ignores it too."""
    args = [K, "--data-dir", "data", "--split", "train", "--seed", "3", "--output", "out"]
    ignoring = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    process = start_cli(args, earlier_run, stdout=subprocess.DEVNULL, preexec_fn=ignoring)
    time.sleep(0.05)  # importing the command line
    process.send_signal(signal.SIGINT)
    lines, seen = stderr_lines(process), []
    wait_for_line(lines, "loaded ", seen)
    process.send_signal(signal.SIGINT)  # and during the fit
    assert process.wait(timeout=WAIT_SECONDS) == 0, seen
    assert (earlier_run / "out" / "mnist-train" / f"k{K}" / "summary.json").exists()


def test_an_error_that_is_not_an_interrupt_stays_itself(small_run, monkeypatch):
    """Only after a real SIGINT or SIGTERM is another exception taken for the interrupt."""

    def broken(*args, **kwargs):
        raise ImportError("a real import error")

    monkeypatch.setattr(kfolder, "save_png", broken)
    with pytest.raises(ImportError, match="a real import error"):
        cli.main(["3", "--data-dir", "data", "--output", "out", "--seed", "1"])


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


# --- the window around the swap: named points, signals sent there (atomic.checkpoint) ---------------


def agreement(folder: Path) -> dict[int, str]:
    """k -> run id, after checking that every k<K> folder and its summary.csv row carry the same
    run id, that the results tables list the same K, and that nothing temporary is left."""
    folders = {
        int(path.name[1:]): json.loads((path / "summary.json").read_text())["run_id"]
        for path in folder.glob("k*")
        if path.is_dir()
    }
    rows = {int(row["k"]): row["run_id"] for row in summary.read_summary(folder / "summary.csv")}
    assert rows == folders, "summary.csv and the k folders disagree"
    markdown = (folder / "results.md").read_text()
    assert all(f"| {k} |" in markdown for k in folders)
    assert leftovers(folder) == []
    return folders


def hooked(monkeypatch, hook: str) -> None:
    monkeypatch.setenv(atomic.TEST_HOOK, hook)


@pytest.fixture
def two_k_run(tmp_path, monkeypatch, capsys) -> Path:
    """tmp_path as the current folder, after one complete run of K=3 and K=4 on small data."""
    write_kaggle(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    assert cli.main(["3", "4", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 0
    capsys.readouterr()
    return tmp_path


WINDOW = [  # (hook, K saved by the interrupted run of K=3 4)
    ("fitted@4", [3]),
    ("staged@4", [3]),  # K=4's folder written, the lock not yet taken: K=4 not saved
    ("locked@4", [3, 4]),  # from here to the end of the update the signal waits
    ("aside@4", [3, 4]),
    ("swapped@4", [3, 4]),
    ("saved@4", [3, 4]),
    ("drawing", [3, 4]),
]


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(("point", "saved"), WINDOW, ids=[point for point, _ in WINDOW])
def test_signal_at_each_point_of_the_window(two_k_run, monkeypatch, capsys, point, saved, signal_name):
    """Folder and row change together, and the message names exactly the K that were saved."""
    folder = two_k_run / "out" / "mnist"
    before = agreement(folder)
    hooked(monkeypatch, f"{point}={signal_name}")
    code = cli.main(["3", "4", "--data-dir", "data", "--output", "out", "--seed", "1", "--samples", "0"])
    assert code == (130 if signal_name == "SIGINT" else 143)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    *_, last = capsys.readouterr().err.splitlines()
    by = " by SIGTERM" if signal_name == "SIGTERM" else ""
    expected = f"interrupted{by}: K={', '.join(map(str, saved))} saved in out/mnist (summary.csv updated, the chart redrawn)"
    if saved == [3]:
        expected += "; K=4 not saved (no partial results were written; their earlier results are intact)"
    assert last == expected
    after = agreement(folder)
    for k in (3, 4):
        assert (after[k] != before[k]) == (k in saved)
    record = json.loads((folder / "k3" / "summary.json").read_text())
    assert record["seed"] == 1


def test_a_second_ctrl_c_while_the_chart_is_redrawn_is_ignored(two_k_run, monkeypatch, capsys):
    hooked(monkeypatch, "swapped@3=SIGINT;drawing=SIGINT")
    assert (
        cli.main(["3", "4", "--data-dir", "data", "--output", "out", "--seed", "1", "--samples", "0"]) == 130
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("interrupted: K=3 saved")
    agreement(two_k_run / "out" / "mnist")


KILLED = [  # (where kill -9 lands, what the folder of K=4 then holds)
    ("staged@4", "old"),  # a complete temporary folder is left: cleaned by the next run of any K
    ("locked@4", "old"),
    ("aside@4", "old"),  # k4 moved aside, the new one not yet in: the next run puts k4 back
    ("swapped@4", "new"),  # new k4 in place, summary.csv not yet updated: the next run mends it
]


KILL_BASE = ["--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]


@pytest.fixture(scope="module")
def earlier_k3_k4(tmp_path_factory) -> Path:
    """A folder after a complete command-line run of K=3 and K=4 (copied by each test)."""
    folder = tmp_path_factory.mktemp("earlier")
    write_kaggle(folder / "data")
    assert run_cli(["3", "4", *KILL_BASE], folder).returncode == 0
    return folder


@pytest.mark.parametrize(("point", "k4"), KILLED, ids=[point for point, _ in KILLED])
def test_kill_9_in_the_window_is_mended_by_the_next_run_of_any_k(tmp_path, earlier_k3_k4, point, k4):
    shutil.copytree(earlier_k3_k4, tmp_path, dirs_exist_ok=True, symlinks=True)
    base = KILL_BASE
    folder = tmp_path / "out" / "mnist"
    before = agreement(folder)
    env = isolated_env(tmp_path) | {atomic.TEST_HOOK: f"{point}=SIGKILL"}
    killed = subprocess.run(
        [sys.executable, "-m", "kmeans_mnist", "4", *base, "--seed", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL
    assert leftovers(folder), "the kill should have left something behind"
    new_k4 = (
        json.loads((folder / "k4" / "summary.json").read_text())["run_id"]
        if (folder / "k4").is_dir()
        else None
    )
    assert (new_k4 == before[4]) == (k4 == "old") or point == "aside@4"

    result = run_cli(["5", *base], tmp_path)  # another K mends the folder
    assert result.returncode == 0, result.stderr
    after = agreement(folder)
    assert sorted(after) == [3, 4, 5]
    assert (after[4] == before[4]) == (k4 == "old")


def test_leftovers_of_live_runs_are_left_alone(tmp_path, capsys, monkeypatch):
    """A temporary folder whose owner is alive (its pid, or a held flock) is not touched."""
    write_kaggle(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    folder = tmp_path / "out" / "mnist"
    folder.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = folder / f".k9.tmp-{sleeper.pid}-00ff"
        held = folder / ".k8.tmp-999999999-00ff"  # no such pid, but someone holds its flock
        dead = folder / ".k7.tmp-999999998-00ff"
        for path in (alive, held, dead):
            path.mkdir()
        (folder / ".summary.csv.tmp-999999997-0a0b").write_text("half")
        claim = atomic.hold(held)
        assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 0
        assert alive.is_dir() and held.is_dir() and not dead.exists()
        assert not (folder / ".summary.csv.tmp-999999997-0a0b").exists()
        os.close(claim)
    finally:
        sleeper.kill()
        sleeper.wait()


def stopped(process: subprocess.Popen) -> bool:
    """Whether the process has stopped itself (SIGSTOP at a checkpoint); Linux /proc."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the process ended ({process.returncode}): {process.communicate()}")
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return True
        time.sleep(0.01)
    pytest.fail("the process did not stop at its checkpoint")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("pause_at", ["staged", "locked"])
def test_two_runs_of_the_same_k_at_once_agree(tmp_path, pause_at):
    """Run A stops at a point, run B of the same K runs meanwhile, then A goes on: whichever
    swaps last wins, and its folder and its row go together. Both succeed."""
    write_kaggle(tmp_path / "data")
    base = ["4", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]
    env = isolated_env(tmp_path)

    def start(seed: int, hook: str = "") -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "kmeans_mnist", *base, "--seed", str(seed)],
            cwd=tmp_path,
            env=env | {atomic.TEST_HOOK: hook},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start(1, f"{pause_at}=SIGSTOP")
    stopped(first)
    second = start(2)
    if pause_at == "locked":  # the lock is held by the stopped run: the second waits for it
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=3)
    else:
        assert second.wait(timeout=60) == 0, second.communicate()
    first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=60) == 0, first.communicate()
    assert second.wait(timeout=60) == 0, second.communicate()
    folder = tmp_path / "out" / "mnist"
    agreement(folder)
    record = json.loads((folder / "k4" / "summary.json").read_text())
    assert record["seed"] == (1 if pause_at == "staged" else 2)  # the last to swap wins


def test_a_killed_runs_cache_temporaries_go_with_the_next_load(tmp_path, monkeypatch, capsys):
    """`*.npy` half-written by a killed run: removed by the next run that uses the cache, unless
    their writer is still alive."""
    write_kaggle(tmp_path / "data")
    cache = tmp_path / "parsed-cache"
    cache.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(cache))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = cache / ".mnist_train.csv-0123.images.npy.tmp-999999999-00aa"
        alive = cache / f".mnist_train.csv-0123.labels.npy.tmp-{sleeper.pid}-00bb"
        for path in (dead, alive):
            path.write_bytes(b"half")
        assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet", "--samples", "0"]) == 0
        assert not dead.exists() and alive.exists()
        assert not [path for path in cache.iterdir() if ".tmp" in path.name and path != alive]
    finally:
        sleeper.kill()
        sleeper.wait()
