"""The experiment folder: root/<experiment>/ holds one sweep's results, all on the same data and settings.

    settings.json     the data and settings every result in the folder was made with
    summary.csv       one row per K (mean and std over repeats, and the settings), from k<K>/summary.json
    results.md/.tex   the same as a paper's table, and the recommendation
    k-choice.png      the chart for choosing K, drawn once per sweep
    k<K>/             one K's results (output.py)

This module alone knows the folder's files and formats. Writing one K reads top to bottom:

    with experiment.staging(k) as staging:    # a hidden, claimed folder beside k<K>
        ...write every file of k<K> into staging (results/run.py, render/kfolder.py)...
        rows = experiment.commit(k, staging)  # lock, signals held, swap, tables rebuilt

The k<K> folders are the truth: summary.csv and results.md/.tex are rebuilt from their
summary.json under an exclusive lock, in the same locked step that swaps a new k<K> into place,
so the folder and its row always agree, and a run killed between the two is mended by the next
one. The report and the K advice read `runs()` and `rows()`, never the tables written here.
Runs with other data or settings go to another folder (experiment_name); a folder whose
recorded data or settings differ from a run's is refused (SettingsMismatch), never mixed.
Hand-edited or damaged files are read defensively: a record that is not what we write counts
as missing (its K is rerun), a damaged settings.json or summary.csv is one SummaryError line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import atomic
from .csvfile import read_rows, rows_text, text_safe

SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "summary.csv"
LOCK_FILE = ".summary.lock"
CHART_FILE = "k-choice.png"
RESULTS_FILES = ("results.md", "results.tex")
OLD_CHART_FILE = "elbow.png"  # the chart of version 0.1, replaced by k-choice.png
REPORT_FILE = "report.html"
PICTURE_FILES = ("representatives_by_k.png", "convergence.png")
OWN_FILES = (SETTINGS_FILE, SUMMARY_FILE, LOCK_FILE, CHART_FILE, *RESULTS_FILES)
RECORD_FILE = "summary.json"  # in each k<K>/

# What makes an experiment: the data and every setting that changes the results (not the seed:
# each row records its seed, and a sweep over K on other seeds is still the same experiment).
DEFAULTS = {
    "split": "all",
    "limit": None,
    "keep_blank": False,
    "init": "k-means++",
    "n_init": 1,
    "max_iter": 300,
    "tol": 1e-4,
    "repeats": 1,
    "features": "pixels",
}
SETTING_WORDS = {
    "dataset": "dataset",
    "n_images": "number of images",
    "image_shape": "image size",
    "split": "--split",
    "limit": "--limit",
    "keep_blank": "--keep-blank",
    "init": "--init",
    "n_init": "--n-init",
    "max_iter": "--max-iter",
    "tol": "--tol",
    "repeats": "--repeats",
    "features": "--features",
    "data_digest": "the images themselves (same number, other content)",
}
SCORES = ("inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "purity", "accuracy", "nmi", "ari")
SUMMARY_COLUMNS = (
    "k",
    "run_id",
    "dataset",
    "source",
    "n_images",
    "image_shape",
    "split",
    "limit",
    "keep_blank",
    "init",
    "n_init",
    "max_iter",
    "tol",
    "seed",
    "repeats",
    "features",
    *[column for name in SCORES for column in (name, f"{name}_std")],
    "silhouette_sample",
    "stability",
    "best_seed",
    "n_iter",
    "fit_seconds",
)
SCORE_FORMATS = {"inertia": ".6e", "calinski_harabasz": ".6g"}  # the rest: .4f


class SummaryError(ValueError):
    """A summary or experiment file that cannot be used as it is; str() is one line for the user."""


class SettingsMismatch(SummaryError):
    """The experiment folder holds results made with other data or settings than this run's."""


def experiment_name(dataset: str, **settings) -> str:
    """The folder name of an experiment: the dataset, then each setting that is not the default.

    experiment_name("mnist") == "mnist"; experiment_name("mnist", limit=3000, n_init=3) ==
    "mnist-limit3000-ninit3". The seed is not part of it (see DEFAULTS).
    """
    unknown = settings.keys() - DEFAULTS.keys()
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    value = {**DEFAULTS, **settings}
    parts = [dataset]
    if value["split"] != "all":
        parts.append(value["split"])
    if value["limit"] is not None:
        parts.append(f"limit{value['limit']}")
    if value["keep_blank"]:
        parts.append("keepblank")
    if value["init"] != DEFAULTS["init"]:
        parts.append("init-" + (re.sub(r"[^a-z0-9]+", "", value["init"].replace("|", "l").lower()) or "x"))
    for name, label in (("n_init", "ninit"), ("max_iter", "maxiter"), ("repeats", "repeats")):
        if value[name] != DEFAULTS[name]:
            parts.append(f"{label}{value[name]}")
    if value["tol"] != DEFAULTS["tol"]:
        parts.append(f"tol{value['tol']:g}")
    if value["features"] != DEFAULTS["features"]:  # "umap:10" -> "umap10": no colon in a folder name
        parts.append(re.sub(r"[^a-z0-9]+", "", str(value["features"]).lower()) or "x")
    return "-".join(parts)


# --- reading our own files, safely ----------------------------------------------------------


def check_own_file(path: Path, want_folder: bool = False) -> None:
    """SummaryError if something that is not ours (a folder, a pipe...) sits where we write path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise SummaryError(f"cannot use {path}: {error.strerror or error}") from None
    if want_folder and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else atomic.kind_of(mode)
        raise SummaryError(f"{path} is {kind}, not a results folder: move it away")
    if not want_folder and not stat.S_ISREG(mode):
        raise SummaryError(
            f"{path} is {atomic.kind_of(mode)}, not the file kmeans-mnist writes there: move it away"
        )


def read_own_text(path: Path) -> str | None:
    """The text of one of our files, None if missing; never blocks (a named pipe is an error)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(descriptor, "rb") as file:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise SummaryError(
                f"{path} is {atomic.kind_of(mode)}, not the file kmeans-mnist writes there: move it away"
            )
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SummaryError(f"{path} is not the text file kmeans-mnist writes: move it away") from None


def read_json_object(path: Path) -> dict | None:
    """A JSON object file of ours: None if missing, SummaryError if it is not a JSON object
    (damaged, hand-edited into another type, or nested too deep to read)."""
    text = read_own_text(path)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise SummaryError(f"{path} is not the file kmeans-mnist writes there (not a JSON object)")
    return value


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the experiment folder's exclusive lock (.summary.lock) for the duration."""
    try:
        with atomic.locked(Path(folder) / LOCK_FILE):
            yield
    except atomic.NotOurs as error:
        raise SummaryError(str(error)) from None


# --- summary.csv --------------------------------------------------------------------------------

_WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")  # ASCII digits only ("²".isdigit() is True), and not 4,000 of them


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary.csv: none if it is missing or empty, SummaryError if it is damaged.

    Reads the files of this version and of 0.1 (fewer columns), with or without a UTF-8 BOM.
    """
    fix = "correct or delete that line, or move the file away (each k<K>/summary.json keeps its run)"
    text = read_own_text(path)
    if not text:
        return []
    try:
        lines = read_rows(text)
    except Exception:  # csv.Error, or a NUL byte
        raise SummaryError(
            f"{path} is not a CSV file; move it away (each k<K>/summary.json keeps its run)"
        ) from None
    names = lines[0]
    if "k" not in names:
        raise SummaryError(f"{path} line 1: the header has no 'k' column; {fix}")
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        if len(fields) != len(names):
            raise SummaryError(
                f"{path} line {number}: {len(fields)} fields, the header has {len(names)}; {fix}"
            )
        row = dict(zip(names, fields, strict=True))
        bad = [name for name in ("k", "inertia", "accuracy") if not _value_ok(name, row.get(name, ""))]
        if bad:
            raise SummaryError(
                f"{path} line {number}: {bad[0]} {row[bad[0]][:20]!r} is not a valid value; {fix}"
            )
        rows.append(row)
    return rows


def _value_ok(name: str, text: str) -> bool:
    if name == "k":
        return bool(_WHOLE_NUMBER.fullmatch(text)) and int(text) >= 1
    if len(text) > 40:
        return False
    try:
        return not text or math.isfinite(float(text))
    except ValueError:
        return False


def row_from_record(record: dict, settings: dict) -> dict[str, str]:
    """One summary.csv row from a k<K>/summary.json (of this version or 0.1); settings fill in
    what a 0.1 record did not keep (split, limit, keep-blank, repeats). ValueError/TypeError/
    KeyError when the record is not what we write (the caller counts it as missing)."""
    scores = record.get("scores") or {}
    metrics = record.get("metrics") or {}
    values: dict[str, object] = {
        "k": int(record["k"]),
        "run_id": record.get("run_id"),
        "dataset": record.get("dataset"),
        "source": record.get("source"),
        "n_images": record.get("n_samples"),
        "image_shape": "x".join(map(str, record.get("image_shape") or [])),
        "seed": record.get("seed"),
        "silhouette_sample": record.get("silhouette_sample"),
        "stability": _number(record.get("stability"), ".4f"),
        "best_seed": record.get("best_seed", record.get("seed")),
        "n_iter": record.get("n_iter"),
        "fit_seconds": _number(record.get("fit_seconds", (record.get("seconds") or {}).get("fit")), ".3f"),
    }
    for name in ("split", "limit", "keep_blank", "init", "n_init", "max_iter", "tol", "repeats", "features"):
        value = record.get(name, settings.get(name, DEFAULTS.get(name)))
        values[name] = json.dumps(value) if isinstance(value, bool) else value
    for name in SCORES:
        form = SCORE_FORMATS.get(name, ".4f")
        if name in scores:
            values[name] = _number(scores[name].get("mean"), form)
            values[f"{name}_std"] = _number(scores[name].get("std"), form)
        else:  # a 0.1 record: one run, its values
            values[name] = _number(record.get("inertia") if name == "inertia" else metrics.get(name), form)
    return {
        name: "" if values.get(name) is None else text_safe(str(values[name])) for name in SUMMARY_COLUMNS
    }


def _number(value, form: str) -> str | None:
    return None if value is None else format(float(value), form)


def summary_text(rows: list[dict[str, str]]) -> str:
    """summary.csv: the csv module's quoting, formula-like text neutralised (csvfile)."""
    return rows_text(SUMMARY_COLUMNS, ([row.get(name, "") for name in SUMMARY_COLUMNS] for row in rows))


# --- the experiment folder ---------------------------------------------------------------------


def check_folder(folder: Path, ks: list[int]) -> None:
    """SummaryError unless folder can take results of these K: its own files are regular files
    (not a folder or a named pipe, which would hang a reader), its k<K> are folders, and its
    summary.csv reads back. Nothing is created."""
    for name in OWN_FILES:
        check_own_file(folder / name)
    for k in ks:
        check_own_file(folder / f"k{k}", want_folder=True)
    read_summary(folder / SUMMARY_FILE)


class CommitFailed(Exception):
    """commit() did not complete. in_swap: the k<K> folder could not be moved into place (its
    earlier results are unchanged); swapped: it was, but the tables could not be rebuilt (the
    next run mends them from the k folders)."""

    def __init__(self, error: Exception, *, swapped: bool, in_swap: bool):
        super().__init__(str(error))
        self.error, self.swapped, self.in_swap = error, swapped, in_swap


class Experiment:
    """root/<name>/: checks that it may be used, stages and commits k<K> folders, reads them back.

    settings: this run's data and settings, as recorded in settings.json (dataset, source,
    n_images, image_shape, split, limit, keep_blank, init, n_init, max_iter, tol, repeats,
    data_digest); None to read a folder without writing to it.
    """

    def __init__(self, folder: Path, settings: dict | None = None):
        self.folder = Path(folder)
        self.settings = {name: text_safe(value) for name, value in (settings or {}).items()}

    @property
    def name(self) -> str:
        return self.folder.name

    def k_folder(self, k: int) -> Path:
        return self.folder / f"k{k}"

    def check(self, ks: list[int]) -> None:
        """Before any fit: the folder can take this run's results (SummaryError if not)."""
        check_folder(self.folder, ks)
        self._check_settings(self._records())

    # -- writing one K: staging, then commit ----------------------------------------------------

    @contextlib.contextmanager
    def staging(self, k: int) -> Iterator[Path]:
        """An empty hidden folder beside k<K> to write that K's files into; removed unless committed."""
        with atomic.staging_folder(self.k_folder(k)) as staging:
            yield staging

    def commit(
        self, k: int, staging: Path, saved: Callable[[list[dict[str, str]]], None] | None = None
    ) -> list[dict[str, str]]:
        """Put a complete staged k<K> in place and rebuild the tables, in one locked step with
        SIGINT/SIGTERM held; returns the folder's summary rows. Raises CommitFailed. saved(rows)
        is told inside the held window, so that a caller interrupted right after knows the K is in.

        Inside the lock: the settings are checked again (another run may have written the folder
        meanwhile), the new tables are written to temporary files, the old k<K> is moved aside,
        the new one renamed in, and only then do the tables replace the old ones. A damaged
        summary.csv, other settings, or a failure to write the tables (disk full) stop it before
        the swap: the folder and its tables then stay as they were.
        """
        atomic.checkpoint("staged", k)
        record = json.loads((staging / RECORD_FILE).read_text(encoding="utf-8"))
        target, swapped = self.k_folder(k), False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with locked(self.folder):
                atomic.remove_abandoned(self.folder)
                with atomic.signals_held():
                    atomic.checkpoint("locked", k)
                    read_summary(self.folder / SUMMARY_FILE)  # a damaged one is reported, not overwritten
                    records = self._records()
                    self._check_settings(records)
                    records[k] = record
                    rows = self._rows(records)
                    with self._tables_replaced(rows):
                        try:
                            atomic.swap_folder(staging, target, between=lambda: atomic.checkpoint("aside", k))
                        except OSError as error:
                            raise CommitFailed(error, swapped=False, in_swap=True) from None
                        swapped = True
                        atomic.checkpoint("swapped", k)
                    if saved is not None:
                        saved(rows)
                    atomic.checkpoint("saved", k)
                    return rows
        except CommitFailed:
            raise
        except (SummaryError, OSError) as error:
            raise CommitFailed(error, swapped=swapped, in_swap=False) from None

    # -- reading the folder back ---------------------------------------------------------------

    def runs(self) -> dict[int, dict]:
        """K -> that K's summary.json with "folder" (its folder's name), for every complete k<K>."""
        return {k: {**record, "folder": f"k{k}"} for k, record in sorted(self._records().items())}

    def rows(self, runs: dict[int, dict] | None = None) -> list[dict[str, str]]:
        """The summary rows, one per complete k<K>, in K order (what summary.csv holds)."""
        return self._rows(self._records() if runs is None else runs)

    def recorded_settings(self) -> dict | None:
        """settings.json as recorded (None if missing or unreadable)."""
        try:
            return read_json_object(self.folder / SETTINGS_FILE)
        except (SummaryError, OSError):
            return None

    def advice(self, rows: list[dict[str, str]]) -> list[str]:
        """The K recommendation over these rows, in lines (kchoice.recommend)."""
        from .kchoice import recommend

        return recommend(rows)

    def describe(self, rows: list[dict[str, str]] | None = None) -> str:
        """One line: what the experiment ran on and with which settings."""
        s = self.settings or self.recorded_settings() or {}
        shape = "x".join(map(str, s.get("image_shape") or []))
        data = f"{s.get('dataset')}: {s.get('n_images', 0):,} images of {shape}"
        selection = [f"split {s.get('split')}"]
        if s.get("limit") is not None:
            selection.append(f"limit {s['limit']}")
        if s.get("keep_blank"):
            selection.append("all-black images kept")
        repeats = s.get("repeats", 1)
        seeds = sorted({row["seed"] for row in rows or [] if row.get("seed")}, key=int)
        seed_text = f"seed {', '.join(seeds)}" if seeds else ""
        fit = (
            f"{s.get('init')}, n_init {s.get('n_init')}, max_iter {s.get('max_iter')}, tol {s.get('tol'):g}, "
            f"{repeats} repeat{'s' if repeats != 1 else ''} per K"
        )
        space = s.get("features") or "pixels"
        fit = f"features {space}; {fit}" if space != "pixels" else fit
        return f"{data} ({', '.join(selection)}); {fit}{'; ' + seed_text if seed_text else ''}"

    # -- the experiment's own pictures and page (drawn by render/, under the lock) -------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with locked(self.folder):
            yield

    @contextlib.contextmanager
    def replacing(self, name: str) -> Iterator[Path]:
        """A temporary path that replaces the folder's file `name` when the block succeeds."""
        try:
            with atomic.replacing(self.folder / name) as temporary:
                yield temporary
        except atomic.NotOurs as error:
            raise SummaryError(str(error)) from None

    def move_aside(self) -> Path:
        """Rename the folder to <folder>.replaced-<UTC time>[-N] beside it, under its lock (no run
        updates it meanwhile; --replace); nothing is deleted. Returns the new path."""
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        with locked(self.folder):
            aside, number = self.folder.with_name(f"{self.name}.replaced-{stamp}"), 1
            while os.path.lexists(aside):
                number += 1
                aside = self.folder.with_name(f"{self.name}.replaced-{stamp}-{number}")
            os.rename(self.folder, aside)
        return aside

    def remove(self, name: str) -> None:
        """Remove one of the folder's own pictures that has nothing left to show (or 0.1's chart)."""
        path = self.folder / name
        if path.is_file() and not path.is_symlink():
            path.unlink()

    # -- inside -------------------------------------------------------------------------------

    def _rows(self, records: dict[int, dict]) -> list[dict[str, str]]:
        return [row_from_record(records[k], self.settings) for k in sorted(records)]

    def _records(self) -> dict[int, dict]:
        """k -> summary.json of every complete k<K> folder (the truth); a record that is not what
        we write (damaged, hand-edited) counts as missing."""
        records = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return {}
        for entry in entries:
            match = re.fullmatch(r"k([1-9][0-9]{0,17})", entry.name)
            if not match or not entry.is_dir():
                continue
            try:
                record = read_json_object(Path(entry.path) / RECORD_FILE)
                if record is not None and record.get("k") == int(match.group(1)):
                    row_from_record(record, self.settings)  # readable as a row, or not ours
                    records[record["k"]] = record
            except (SummaryError, OSError, ValueError, TypeError, KeyError, AttributeError):
                continue
        return records

    def _check_settings(self, records: dict[int, dict]) -> None:
        """settings.json (or, in a folder of version 0.1, each k<K>/summary.json) must match this run."""
        path = self.folder / SETTINGS_FILE
        try:
            recorded = read_json_object(path)
        except SummaryError:
            raise SummaryError(
                f"{path} is not the settings file kmeans-mnist writes: move it away (or move {self.folder} away)"
            ) from None
        if recorded is not None:
            self._compare(recorded, f"{self.folder} (see {SETTINGS_FILE})")
        for k in sorted(records):
            record = {**records[k], "n_images": records[k].get("n_samples")}
            self._compare(record, f"{self.folder} (its k{k} folder)")

    def _compare(self, recorded: dict, where: str) -> None:
        for name, words in SETTING_WORDS.items():
            if name not in recorded or name not in self.settings:
                continue
            theirs, ours = recorded[name], self.settings[name]
            if name == "image_shape":
                theirs = list(theirs) if isinstance(theirs, list) else theirs
                ours = list(ours or [])
            if theirs != ours:
                raise SettingsMismatch(
                    f"{where} holds results made with other data or settings: {words} "
                    f"{_show(theirs)} there, {_show(ours)} in this run; never mixed: move {self.folder} away"
                )

    @contextlib.contextmanager
    def _tables_replaced(self, rows: list[dict[str, str]]) -> Iterator[None]:
        """Write the tables to temporary files, run the block, then replace the old files."""
        from .kchoice import recommend, results_tables

        markdown, latex = results_tables(rows, self.describe(rows), recommend(rows))
        targets = {
            SUMMARY_FILE: summary_text(rows),
            RESULTS_FILES[0]: markdown,
            RESULTS_FILES[1]: latex,
            SETTINGS_FILE: json.dumps({"format": 1, **self.settings}, indent=2) + "\n",
        }
        try:
            with contextlib.ExitStack() as stack:
                for name, text in targets.items():
                    write_text(stack.enter_context(self.replacing(name)), text)
                yield
        except atomic.NotOurs as error:
            raise SummaryError(str(error)) from None


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _show(value) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "..."
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)[:40]
