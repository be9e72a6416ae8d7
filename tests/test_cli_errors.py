"""Every way to get the command wrong: one `error:` line, exit code 2, no traceback, results untouched.

Each case runs `python -m kmeans_mnist` as a subprocess in tmp_path, with both caches in tmp_path
and a dead proxy, beside an output folder holding an earlier run's results; the whole of tmp_path
(caches aside) must be byte-identical afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cli_support import (
    FASHION_HEADER,
    csv_lines,
    kaggle_csv,
    leftovers,
    random_images,
    run_cli,
    snapshot,
    write_kaggle,
    write_usps,
)
from kmeans_mnist import cli
from kmeans_mnist.render import kfolder
from kmeans_mnist.results import experiment as summary
from kmeans_mnist.results import model as model_file
from kmeans_mnist.results import run as output

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ROOT_SKIP = "runs as root, where file permissions do not stop reading or writing"


@pytest.fixture(scope="module")
def earlier_results(tmp_path_factory) -> Path:
    """An output folder holding a complete earlier run (mnist K=3 and K=4), made once."""
    base = tmp_path_factory.mktemp("earlier")
    data = write_kaggle(base / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KMEANS_MNIST_CACHE", str(base / "parsed-cache"))
        code = cli.main(
            ["3", "4", "--data-dir", str(data), "--output", str(base / "out"), "--quiet", "--samples", "4"]
        )
    assert code == 0
    (base / "out" / "usps").mkdir()
    (base / "out" / "usps" / "marker.txt").write_text("results of another dataset\n")
    return base / "out"


@pytest.fixture
def workdir(tmp_path, earlier_results) -> Path:
    shutil.copytree(earlier_results, tmp_path / "out")
    return tmp_path


@pytest.fixture
def in_workdir(workdir, monkeypatch) -> Path:
    """workdir as the current folder, with small Kaggle CSVs in data/ and its own parsed cache."""
    write_kaggle(workdir / "data")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(workdir / "parsed-cache"))
    return workdir


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]  # "--output out" is added unless given
    expect: str  # a word the message must contain
    setup: Callable[[Path], None] | None = None
    root_skips: bool = False


def mnist(tmp: Path) -> None:
    write_kaggle(tmp / "data")


def fashion_files(tmp: Path) -> None:
    write_kaggle(tmp / "data", "fashion")


def only_train(tmp: Path) -> None:
    write_kaggle(tmp / "data")
    (tmp / "data" / "mnist_test.csv").unlink()


def black(tmp: Path) -> None:
    _, labels = random_images(6)
    (tmp / "data").mkdir()
    for name in ("mnist_train.csv", "mnist_test.csv"):
        (tmp / "data" / name).write_bytes(kaggle_csv(csv_lines(np.zeros((6, 28, 28), np.uint8), labels)))


def bad_train_csv(make: Callable[[list[bytes]], bytes]) -> Callable[[Path], None]:
    """mnist data whose train file is make(lines of a valid 30-row file)."""

    def setup(tmp: Path) -> None:
        write_kaggle(tmp / "data")
        (tmp / "data" / "mnist_train.csv").write_bytes(make(csv_lines(*random_images(30))))

    return setup


def edit_line(lines: list[bytes], number: int, old: bytes, new: bytes) -> bytes:
    """The file with line `number` (1 = header) changed: the first `old` replaced by `new`."""
    lines = list(lines)
    assert old in lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(old, new, 1)
    return kaggle_csv(lines)


def usps(**options) -> Callable[[Path], None]:
    return lambda tmp: write_usps(tmp / "sheets", **options)


def usps_replaced(content: bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write_usps(tmp / "sheets")
        (tmp / "sheets" / "usps_3.jpg").write_bytes(content)

    return setup


def usps_truncated(tmp: Path) -> None:
    write_usps(tmp / "sheets")
    sheet = tmp / "sheets" / "usps_2.jpg"
    sheet.write_bytes(sheet.read_bytes()[:300])


def unreadable(tmp: Path) -> None:
    write_kaggle(tmp / "data")
    (tmp / "data" / "mnist_train.csv").chmod(0)


def output_file(tmp: Path) -> None:
    write_kaggle(tmp / "data")
    (tmp / "results.txt").write_text("not a folder\n")


def dataset_folder_is_file(tmp: Path) -> None:
    write_kaggle(tmp / "data")
    (tmp / "out2").mkdir()
    (tmp / "out2" / "mnist").write_text("not a folder\n")


def damaged_summary(content: bytes) -> Callable[[Path], None]:
    """mnist data, and the earlier run's summary.csv replaced by content (edited by hand, say)."""

    def setup(tmp: Path) -> None:
        write_kaggle(tmp / "data")
        (tmp / "out" / "mnist" / "summary.csv").write_bytes(content)

    return setup


SUMMARY_HEADER = b"k,inertia,purity,accuracy,nmi,ari,n_iter,fit_seconds,seed\n"


def read_only_output(tmp: Path) -> None:
    write_kaggle(tmp / "data")
    (tmp / "out" / "mnist").chmod(0o555)


D = ["--data-dir", "data"]
S = ["--dataset", "usps", "--data-dir", "sheets"]

CASES = [
    # K
    Case("k-missing", [], "required"),
    Case("k-missing-with-options", ["--data-dir", "data", "--quiet"], "required"),
    Case("k-zero", ["0"], "at least 1"),
    Case("k-negative", ["-3"], "at least 1"),
    Case("k-fraction", ["2.5"], "whole number"),
    Case("k-word", ["abc"], "whole number"),
    Case("k-empty-text", [""], "whole number"),
    Case("k-twice", ["3", "3"], "twice"),
    Case("k-one-bad-of-three", ["3", "x", "5", *D], "whole number", mnist),
    Case("k-over-images", ["31", *D], "larger than the number of images", mnist),
    Case("k-one-over-images", ["3", "999999", *D], "999999", mnist),
    Case("k-over-limit", ["6", *D, "--limit", "5"], "--limit", mnist),
    Case("k-over-split", ["21", *D, "--split", "train"], "larger than the number of images", mnist),
    Case("k-all-black-skipped", ["2", *D], "--keep-blank", black),
    # options
    Case("dataset-unknown", ["3", "--dataset", "cifar"], "invalid choice"),
    Case("split-unknown", ["3", "--split", "validation"], "invalid choice"),
    Case("init-unknown", ["3", "--init", "kmeans++"], "invalid choice"),
    Case("option-unknown", ["3", "--clusters", "4"], "unrecognized"),
    Case("limit-zero", ["3", "--limit", "0"], "--limit"),
    Case("limit-negative", ["3", "--limit", "-5"], "--limit"),
    Case("limit-not-a-number", ["3", "--limit", "ten"], "--limit"),
    Case("n-init-zero", ["3", "--n-init", "0"], "--n-init"),
    Case("max-iter-zero", ["3", "--max-iter", "0"], "--max-iter"),
    Case("tol-negative", ["3", "--tol", "-0.001"], "--tol"),
    Case("tol-nan", ["3", "--tol", "nan"], "--tol"),
    Case("tol-infinite", ["3", "--tol", "inf"], "--tol"),
    Case("samples-negative", ["3", "--samples", "-1"], "--samples"),
    Case("seed-negative", ["3", "--seed", "-1", *D], "--seed", mnist),
    Case("seed-not-a-number", ["3", "--seed", "1.5"], "--seed"),
    Case("split-with-usps", ["3", "--dataset", "usps", "--split", "train"], "--split"),
    Case("option-missing-value", ["3", "--data-dir"], "--data-dir"),
    # the data folder
    Case("data-dir-missing", ["3", "--data-dir", "nowhere"], "does not exist"),
    Case("data-dir-empty", ["3", "--data-dir", "empty"], "is empty", lambda tmp: (tmp / "empty").mkdir()),
    Case("data-dir-is-a-file", ["3", "--data-dir", "data/mnist_train.csv"], "not a folder", mnist),
    Case("data-dir-empty-text", ["3", "--data-dir", ""], "--data-dir", mnist),
    Case("data-dir-fashion-files-for-mnist", ["3", *D], "--dataset fashion", fashion_files),
    Case("data-dir-mnist-files-for-fashion", ["3", *D, "--dataset", "fashion"], "--dataset mnist", mnist),
    Case("data-dir-test-file-missing", ["3", *D], "--split train", only_train),
    Case("usps-dir-missing", ["3", "--dataset", "usps", "--data-dir", "nowhere"], "does not exist"),
    Case("usps-dir-holds-csv", ["3", "--dataset", "usps", *D], "usps_1.jpg", mnist),
    # CSV contents
    Case("csv-empty", ["3", *D], "is empty", bad_train_csv(lambda lines: b"")),
    Case("csv-bom-only", ["3", *D], "is empty", bad_train_csv(lambda lines: b"\xef\xbb\xbf")),
    Case("csv-header-only", ["3", *D], "no data rows", bad_train_csv(lambda lines: kaggle_csv(lines[:1]))),
    Case(
        "csv-wrong-header",
        ["3", *D],
        "header",
        bad_train_csv(lambda lines: kaggle_csv([b"a,b,c", *lines[1:]])),
    ),
    Case(
        "csv-fashion-header-in-mnist-file",
        ["3", *D],
        "--dataset fashion",
        bad_train_csv(lambda lines: kaggle_csv([FASHION_HEADER.encode(), *lines[1:]])),
    ),
    Case(
        "csv-header-with-control-characters",
        ["3", *D],
        "header",
        bad_train_csv(lambda lines: kaggle_csv([b"lab\rel\x0b\x0c\x1c\x85", *lines[1:]])),
    ),
    Case(
        "csv-784-fields", ["3", *D], "784 fields", bad_train_csv(lambda lines: edit_line(lines, 5, b",", b""))
    ),
    Case(
        "csv-786-fields",
        ["3", *D],
        "786 fields",
        bad_train_csv(lambda lines: kaggle_csv([*lines[:4], lines[4] + b",0", *lines[5:]])),
    ),
    Case(
        "csv-non-numeric", ["3", *D], "'x'", bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",x,"))
    ),
    Case(
        "csv-value-256", ["3", *D], "256", bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",256,"))
    ),
    Case(
        "csv-value-minus-1",
        ["3", *D],
        "'-1'",
        bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",-1,")),
    ),
    Case(
        "csv-value-huge",
        ["3", *D],
        "out of range",
        bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",99999999999999999999,")),
    ),
    Case(
        "csv-value-decimal",
        ["3", *D],
        "'1.0'",
        bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",1.0,")),
    ),
    Case(
        "csv-value-with-space",
        ["3", *D],
        "' 7'",
        bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b", 7,")),
    ),
    Case(
        "csv-value-empty", ["3", *D], "empty", bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",,"))
    ),
    Case(
        "csv-label-10",
        ["3", *D],
        "label 10",
        bad_train_csv(lambda lines: kaggle_csv([*lines[:4], b"10" + lines[4][1:], *lines[5:]])),
    ),
    Case(
        "csv-blank-line-inside",
        ["3", *D],
        "line 5: empty line",
        bad_train_csv(lambda lines: kaggle_csv([*lines[:4], b"", *lines[4:]])),
    ),
    Case(
        "csv-truncated-last-line", ["3", *D], "line 31", bad_train_csv(lambda lines: kaggle_csv(lines)[:-900])
    ),
    Case(
        "csv-stray-cr",
        ["3", *D],
        "carriage return",
        bad_train_csv(lambda lines: edit_line(lines, 5, b",0,", b",0\r,")),
    ),
    Case(
        "csv-cr-line-endings",
        ["3", *D],
        "lone CR",
        bad_train_csv(lambda lines: kaggle_csv(lines, newline=b"\r")),
    ),
    Case(
        "csv-utf16",
        ["3", *D],
        "UTF-16",
        bad_train_csv(lambda lines: kaggle_csv(lines).decode().encode("utf-16")),
    ),
    Case("csv-binary", ["3", *D], "header", bad_train_csv(lambda lines: bytes(range(256)) * 4)),
    # USPS sheets
    Case("usps-sheet-missing", ["3", *S], "usps_4.jpg not found", usps(skip=4)),
    Case("usps-sheet-not-a-grid", ["3", *S], "not a grid of 16x16", usps(size=(30, 48))),
    Case("usps-sheet-smaller-than-a-tile", ["3", *S], "not a grid of 16x16", usps(size=(8, 8))),
    Case("usps-sheet-not-an-image", ["3", *S], "not an image", usps_replaced(b"hello, I am text\n")),
    Case("usps-sheet-empty-file", ["3", *S], "not an image", usps_replaced(b"")),
    Case("usps-sheet-truncated", ["3", *S], "usps_2.jpg", usps_truncated),
    Case("usps-k-over-tiles", ["31", *S], "larger than the number of images", usps()),
    # permissions and the output folder
    Case("csv-unreadable", ["3", *D], "Permission denied", unreadable, root_skips=True),
    Case("output-read-only", ["3", *D], "--output", read_only_output, root_skips=True),
    Case("output-is-a-file", ["3", *D, "--output", "results.txt"], "not a folder", output_file),
    Case("output-inside-a-file", ["3", *D, "--output", "results.txt/run1"], "not a folder", output_file),
    Case(
        "output-dataset-folder-is-a-file",
        ["3", *D, "--output", "out2"],
        "not a folder",
        dataset_folder_is_file,
    ),
    Case("output-empty-text", ["3", *D, "--output", ""], "--output", mnist),
    Case(
        "summary-extra-field",
        ["5", *D],
        "line 2: 10 fields",
        damaged_summary(SUMMARY_HEADER + b"3,1,2,3,4,5,6,7,8,9\n"),
    ),
    Case(
        "summary-k-not-a-number",
        ["5", *D],
        "line 3: k 'three'",
        damaged_summary(SUMMARY_HEADER + b"4,1,,,,,,,\nthree,1,,,,,,,\n"),
    ),
    Case(
        "summary-inertia-not-a-number",
        ["5", *D],
        "inertia 'abc'",
        damaged_summary(SUMMARY_HEADER + b"3,abc,,,,,,,\n"),
    ),
    Case("summary-no-k-column", ["5", *D], "no 'k' column", damaged_summary(b"K;inertia\n3;1.5\n")),
    Case("summary-not-text", ["5", *D], "summary.csv", damaged_summary(b"\xff\xfe\x00\x01")),
    # no --data-dir: kagglehub, with nothing cached and no way out
    Case("kagglehub-offline-mnist", ["3"], "download"),
    Case("kagglehub-offline-fashion", ["3", "--dataset", "fashion", "--split", "test"], "download"),
]


def check_one_error_line(stderr: str, expect: str) -> str:
    """The single `error:` line of stderr, after checking there is nothing else."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()  # splits on every line break Python knows, \r and \x0b included
    assert len(lines) == 1 and lines[0].strip(), f"expected one line, got {lines!r}"
    message = lines[0]
    assert message.startswith("error: "), message
    assert expect in message, f"{expect!r} not in {message!r}"
    return message


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_fails_with_one_line(case, workdir):
    if case.root_skips and IS_ROOT:
        pytest.skip(ROOT_SKIP)
    if case.setup:
        case.setup(workdir)
    args = case.args if "--output" in case.args else [*case.args, "--output", "out"]
    before = snapshot(workdir)
    result = run_cli(args, workdir)
    assert result.returncode == 2, result.stderr
    message = check_one_error_line(result.stderr, case.expect)
    assert result.stdout == ""
    assert snapshot(workdir) == before, "the run changed files"
    if case.id.startswith("kagglehub"):
        assert "--data-dir" in message and "KAGGLEHUB_CACHE" in message
    print(message)  # pytest -s -k <case> shows it: the list of messages comes from here


# --- what is accepted ----------------------------------------------------------------------


def good_train_csv(**format_options) -> Callable[[Path], None]:
    return bad_train_csv(lambda lines: kaggle_csv(lines, **format_options))


ACCEPTED = {
    "csv-crlf": (["3", *D], good_train_csv(newline=b"\r\n")),
    "csv-bom": (["3", *D], good_train_csv(bom=True)),
    "csv-no-final-newline": (["3", *D], good_train_csv(final_newline=False)),
    "csv-bom-crlf-no-final-newline": (
        ["3", *D],
        good_train_csv(bom=True, newline=b"\r\n", final_newline=False),
    ),
    "usps-colour-sheets": (["3", *S], usps(mode="RGB")),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_input_runs(name, workdir):
    """Other data than the earlier results': into their own output, leaving the earlier ones alone."""
    args, setup = ACCEPTED[name]
    setup(workdir)
    dataset = "usps" if "usps" in args else "mnist"
    earlier = snapshot(workdir / "out")
    result = run_cli([*args, "--output", "fresh", "--quiet", "--samples", "0"], workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""
    assert (workdir / "fresh" / dataset / "k3" / "summary.json").is_file()
    assert snapshot(workdir / "out") == earlier
    assert leftovers(workdir) == []


# --- the disk filling up while writing (in-process) -------------------------------------------


def fail_on_call(real: Callable, number: int, error: BaseException) -> Callable:
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise error
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize(
    "module, writer", [(kfolder, "save_png"), (output, "write_assignments"), (model_file, "save_model")]
)
@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "verbose"])
@pytest.mark.usefixtures("in_workdir")
def test_disk_full_while_writing_leaves_earlier_results(module, writer, quiet, workdir, monkeypatch, capsys):
    number = 3 if writer == "save_png" else 1  # the 3rd PNG: midway through the centroids
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(module, writer, fail_on_call(getattr(module, writer), number, full))
    before = snapshot(workdir)

    code = cli.main(["3", "--data-dir", "data", "--output", "out", "--samples", "4", *(["--quiet"] * quiet)])

    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert lines[-1].startswith("error: ") and "No space left on device" in lines[-1], lines
    assert "free" in lines[-1] and "--output" in lines[-1]
    if quiet:
        assert len(lines) == 1 and captured.out == ""
    else:
        assert len(lines) == 2 and lines[0].startswith("loaded ")  # the progress line, then the error
    assert snapshot(workdir) == before
    assert leftovers(workdir) == []


@pytest.mark.usefixtures("in_workdir")
def test_disk_full_while_updating_the_summary_keeps_it_whole(workdir, monkeypatch, capsys):
    """The tables are written before the new k5 is swapped in: a full disk leaves both as they were."""
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(summary, "write_text", fail_on_call(summary.write_text, 2, full))  # results.md
    before = snapshot(workdir)

    code = cli.main(["5", "--data-dir", "data", "--output", "out", "--quiet"])

    assert code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: could not update out/mnist/summary.csv: No space left on device; free")
    assert line.endswith("(nothing was saved for K=5: its earlier results are unchanged)")
    assert snapshot(workdir) == before
    assert leftovers(workdir) == []


@pytest.mark.usefixtures("in_workdir")
def test_disk_full_while_drawing_the_chart(workdir, monkeypatch, capsys):
    """The chart comes last, once per sweep: K=5 is saved, with its row; the message says so."""
    from kmeans_mnist.render import choosing_k

    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(choosing_k, "draw_k_choice", fail_on_call(choosing_k.draw_k_choice, 1, full))
    chart = (workdir / "out" / "mnist" / "k-choice.png").read_bytes()

    assert cli.main(["5", "--data-dir", "data", "--output", "out", "--quiet"]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "error: could not draw out/mnist/k-choice.png: No space left on device (K=5 was saved; "
        "summary.csv and results.md are up to date; the next run redraws the chart)"
    )
    assert [row["k"] for row in summary.read_summary(workdir / "out" / "mnist" / "summary.csv")] == [
        "3",
        "4",
        "5",
    ]
    assert (workdir / "out" / "mnist" / "k-choice.png").read_bytes() == chart
    assert leftovers(workdir) == []


@pytest.mark.usefixtures("in_workdir")
def test_output_without_write_permission_is_refused_before_loading(workdir, monkeypatch, capsys):
    """As root, permissions stop nothing, so the check is made to fail here (see output-read-only)."""
    monkeypatch.setattr(cli.os, "access", lambda path, mode: Path(path) != Path("out/mnist"))
    monkeypatch.setattr(
        "kmeans_mnist.data.datasets.load_dataset", fail_on_call(None, 1, AssertionError("loaded"))
    )
    before = snapshot(workdir)
    assert cli.main(["3", "--data-dir", "data", "--output", "out"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line
        == "error: cannot write the results to out/mnist: no permission to write in out/mnist; choose another --output"
    )
    assert snapshot(workdir) == before


@pytest.mark.usefixtures("in_workdir")
def test_permission_lost_while_writing(workdir, monkeypatch, capsys):
    denied = PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(kfolder, "save_png", fail_on_call(kfolder.save_png, 3, denied))
    before = snapshot(workdir)
    assert cli.main(["3", "--data-dir", "data", "--output", "out", "--quiet"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "Permission denied; choose an --output folder you can write to" in line
    assert snapshot(workdir) == before
    assert leftovers(workdir) == []


@pytest.mark.usefixtures("in_workdir")
def test_summary_damaged_during_the_run(workdir, monkeypatch, capsys):
    """Checked before the load and before the fit; should it break later, nothing is saved for that K."""
    damaged = summary.SummaryError("out/mnist/summary.csv line 2: 10 fields, the header has 9")
    # calls 1 and 2: the checks before the load and before the fit; 3: under the lock
    monkeypatch.setattr(summary, "read_summary", fail_on_call(summary.read_summary, 3, damaged))
    before = snapshot(workdir)

    assert cli.main(["5", "--data-dir", "data", "--output", "out", "--quiet"]) == 2

    [line] = capsys.readouterr().err.splitlines()
    assert line == (
        "error: out/mnist/summary.csv line 2: 10 fields, the header has 9 "
        "(nothing was saved for K=5: its earlier results are unchanged)"
    )
    assert snapshot(workdir) == before
    assert leftovers(workdir) == []


@pytest.mark.parametrize(
    ("content", "ks"),
    [
        (b"", []),
        (b"k,inertia\r\n3,1.5\r\n\r\n4,\r\n", ["3", "4"]),  # saved back with CRLF; a blank line; no inertia
        (b"k,inertia,note\n7,2.5,mine\n", ["7"]),  # a column added by hand is read (and dropped on rewrite)
    ],
    ids=["empty", "crlf-and-blank-lines", "extra-column"],
)
def test_summary_files_that_still_read(tmp_path, content, ks):
    (tmp_path / "summary.csv").write_bytes(content)
    assert [row["k"] for row in summary.read_summary(tmp_path / "summary.csv")] == ks


# --- cost: memory refused before any work, long runs announced (issue 13) ---------------------


@pytest.mark.usefixtures("in_workdir")
def test_k_beyond_memory_is_refused_before_any_work(workdir, monkeypatch, capsys):
    from kmeans_mnist import cli
    from kmeans_mnist.cli import preflight
    from kmeans_mnist.engine import lloyd as engine

    budget = engine.estimate(20, 784, 10, dtype=np.uint8).bytes  # data/ holds 20 training images
    monkeypatch.setattr(preflight, "available_memory", lambda: budget)
    monkeypatch.setattr(engine, "fit", fail_on_call(engine.fit, 1, AssertionError("fitted")))
    before = snapshot(workdir)
    code = cli.main(["2", "15", "--data-dir", "data", "--split", "train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: K=15 needs about ") and err[0].endswith(" is available: use K <= 10")
    assert "0.0 GiB" not in err[0] and " MiB of working memory for 20 images" in err[0]  # small sizes in MiB
    assert snapshot(workdir) == before
    monkeypatch.setattr(preflight, "available_memory", lambda: 1000)
    assert cli.main(["2", "--data-dir", "data", "--split", "train"]) == 2
    assert "use --limit to cluster fewer images" in capsys.readouterr().err
    assert snapshot(workdir) == before


@pytest.mark.parametrize("quiet", [False, True])
@pytest.mark.usefixtures("in_workdir")
def test_a_very_long_run_is_announced_up_front(quiet, monkeypatch, capsys):
    from kmeans_mnist import cli
    from kmeans_mnist.engine import lloyd as engine

    monkeypatch.setattr(engine, "FLOPS_PER_SECOND", 1.0)  # every fit looks like weeks
    code = cli.main(["3", "--data-dir", "data", "--split", "train", *(["--quiet"] if quiet else [])])
    err = capsys.readouterr().err
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note: K=3 will take very long")]
    assert len(notes) == (0 if quiet else 1)
    if not quiet:
        assert "days" in notes[0] and "Ctrl-C stops it" in notes[0]


# --- words a newcomer met (a newcomer's try of the README) --------------------------------------


def test_a_k_after_export_members_is_told_to_come_first(capsys):
    assert cli.main(["--dataset", "usps", "--export-members", "3"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: argument --export-members: invalid choice: '3'")
    assert "give K before it (kmeans-mnist 3 --export-members)" in line


def test_predicts_missing_source_is_named_as_source_not_as_data_dir(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "model.npz"), str(tmp_path / "nothere")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: SOURCE {tmp_path / 'nothere'} does not exist: give mnist, fashion, usps")
    assert "--data-dir" not in line


@pytest.mark.parametrize("command", [[], ["predict"]])
def test_help_shows_only_defaults_that_say_something(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert "(default: None)" not in text and "(default: False)" not in text
    assert ("(default: all)" in text) and (command or "(default: 0)" in text)  # --split; --seed 0 kept
    if command:  # predict's data options speak of SOURCE, not of --dataset, and assign, not cluster
        assert "--dataset" not in text and "assign colour images in grey" in text
        assert "index,path,label" in text
