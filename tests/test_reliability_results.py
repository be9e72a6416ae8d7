"""The results side under hostile names and damaged files: every CSV is valid CSV and safe to open
in a spreadsheet, no lock or temporary file follows a link out of its folder, and hand-edited
settings.json or k<K>/summary.json end in one error line or a rerun, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from cli_support import write_kaggle
from kmeans_mnist import cli
from kmeans_mnist.results import csvfile


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    write_kaggle(tmp_path / "data", n_train=60, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "parsed-cache"))
    return tmp_path


def run(*args: str) -> int:
    return cli.main([*args, "--output", "out", "--samples", "0", "--quiet"])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- CSV: the csv module's quoting, formula-like cells neutralised ---------------------------------


@pytest.mark.parametrize("text", ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("x")'])
def test_a_cell_that_starts_like_a_formula_gets_a_quote(text):
    assert csvfile.safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["-5", "+1.5", "1e3", "-0.25", "cat", "", "a=b"])
def test_numbers_and_plain_text_stay_as_they_are(text):
    assert csvfile.safe_cell(text) == text


def test_cells_round_trip_through_the_csv_module_and_pandas():
    pandas = pytest.importorskip("pandas", reason='needs pandas, in the test extra: pip install -e ".[test]"')
    names = ["a,b", 'say "hi"', "new\nline", "carriage\rreturn", "ünï 字", "=1+2"]
    text = csvfile.rows_text(["name", "n"], [[name, i] for i, name in enumerate(names)])
    expected = [csvfile.safe_cell(name) for name in names]
    assert [row[0] for row in csvfile.read_rows(text)[1:]] == expected
    assert pandas.read_csv(io.StringIO(text), keep_default_na=False)["name"].tolist() == expected
    assert [field for name in names for field in next(csv.reader([csvfile.field(name)]))] == expected


def test_a_data_dir_named_with_quotes_commas_and_a_formula_keeps_summary_csv_valid(home, capsys):
    pandas = pytest.importorskip("pandas", reason='needs pandas, in the test extra: pip install -e ".[test]"')
    folder = home / '=odd "name", here'
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "images.npy", rng.integers(1, 256, (40, 8, 8), dtype=np.uint8))
    assert run("2", "3", "--dataset", "files", "--data-dir", str(folder / "images.npy")) == 0
    [summary] = (home / "out").glob("*/summary.csv")
    rows = list(csv.DictReader(summary.open(encoding="utf-8", newline="")))
    assert [row["k"] for row in rows] == ["2", "3"]
    assert all('=odd "name", here' in row["source"] for row in rows)
    assert all(not row[name].startswith(csvfile.FORMULA_STARTS) for row in rows for name in row)
    assert pandas.read_csv(summary)["k"].tolist() == [2, 3]


# --- nothing follows a link out of the output folder -------------------------------------------


def test_a_lock_file_that_is_a_dangling_link_is_refused_and_creates_nothing(home, capsys):
    assert run("2", "--data-dir", "data") == 0
    folder = home / "out" / "mnist"
    outside = home / "elsewhere" / "created-by-the-tool"
    (home / "elsewhere").mkdir()
    (folder / ".summary.lock").unlink()
    os.symlink(outside, folder / ".summary.lock")
    before = sorted(path.name for path in folder.iterdir())
    assert run("3", "--data-dir", "data") == 2
    assert "symbolic link" in one_error_line(capsys)
    assert not outside.exists() and not os.path.lexists(outside)
    assert sorted(path.name for path in folder.iterdir()) == before


# --- hand-edited files of the experiment folder -------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ["[" * 100_000 + "]" * 100_000, '["a list"]', "{not json", '"a string"'],
    ids=["deep-nesting", "a-list", "not-json", "a-string"],
)
def test_a_damaged_settings_json_is_one_line_naming_the_file(home, capsys, content):
    assert run("2", "--data-dir", "data") == 0
    settings = home / "out" / "mnist" / "settings.json"
    settings.write_text(content, encoding="utf-8")
    assert run("3", "--data-dir", "data") == 2
    line = one_error_line(capsys)
    assert "settings.json" in line and "move" in line
    assert settings.read_text(encoding="utf-8") == content  # reported, not overwritten


@pytest.mark.parametrize(
    "edit",
    [
        lambda record: "[" * 100_000 + "]" * 100_000,
        lambda record: json.dumps({**record, "scores": ["inertia"]}),
        lambda record: json.dumps({**record, "k": "2"}),
        lambda record: json.dumps({**record, "n_iter": {"deep": [1, 2]}, "scores": {"inertia": "x"}}),
    ],
    ids=["deep-nesting", "scores-a-list", "k-a-string", "wrong-types"],
)
def test_a_hand_edited_k_summary_json_counts_as_missing_and_is_rerun(home, capsys, edit):
    assert run("2", "3", "--data-dir", "data") == 0
    record_path = home / "out" / "mnist" / "k2" / "summary.json"
    record_path.write_text(edit(json.loads(record_path.read_text(encoding="utf-8"))), encoding="utf-8")
    assert run("4", "--data-dir", "data") == 0, capsys.readouterr().err
    summary = home / "out" / "mnist" / "summary.csv"
    assert [row["k"] for row in csv.DictReader(summary.open(encoding="utf-8"))] == ["3", "4"]
    assert run("2", "--data-dir", "data") == 0  # the K runs again and its row comes back
    assert [row["k"] for row in csv.DictReader(summary.open(encoding="utf-8"))] == ["2", "3", "4"]
    assert json.loads(record_path.read_text(encoding="utf-8"))["k"] == 2
