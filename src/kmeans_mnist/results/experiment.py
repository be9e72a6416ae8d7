"""The experiment folder: root/<experiment>/ holds one sweep's results, all on the same data and settings.

    settings.json     the data and settings every result in the folder was made with
    summary.csv       one row per K (mean and std over repeats, and the settings), from k<K>/summary.json
    results.md/.tex   the same as a paper's table, and the recommendation
    k-choice.png      the chart for choosing K, drawn once per sweep
    k<K>/             one K's results (output.py)

The k<K> folders are the truth: summary.csv and results.md/.tex are rebuilt from their
summary.json under an exclusive lock, in the same locked step that swaps a new k<K> into place,
so the folder and its row always agree, and a run killed between the two is mended by the next
one. Runs with other data or settings go to another folder (experiment_name); a folder whose
recorded data or settings differ from a run's is refused (SettingsMismatch), never mixed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from ..atomic import sibling_path
from .run import text_safe

SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "summary.csv"
LOCK_FILE = ".summary.lock"
CHART_FILE = "k-choice.png"
RESULTS_FILES = ("results.md", "results.tex")
OLD_CHART_FILE = "elbow.png"  # the chart of version 0.1, replaced by k-choice.png
OWN_FILES = (SETTINGS_FILE, SUMMARY_FILE, LOCK_FILE, CHART_FILE, *RESULTS_FILES)

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


# --- reading and locking our own files, safely --------------------------------------------------


def _kind(mode: int) -> str:
    for test, words in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def check_own_file(path: Path, want_folder: bool = False) -> None:
    """SummaryError if something that is not ours (a folder, a pipe...) sits where we write path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise SummaryError(f"cannot use {path}: {error.strerror or error}") from None
    if want_folder and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
        raise SummaryError(f"{path} is {kind}, not a results folder: move it away")
    if not want_folder and not stat.S_ISREG(mode):
        raise SummaryError(f"{path} is {_kind(mode)}, not the file kmeans-mnist writes there: move it away")


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
                f"{path} is {_kind(mode)}, not the file kmeans-mnist writes there: move it away"
            )
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SummaryError(f"{path} is not the text file kmeans-mnist writes: move it away") from None


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the experiment folder's exclusive lock (flock on .summary.lock) for the duration."""
    path = folder / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except IsADirectoryError:
        raise SummaryError(
            f"{path} is a folder, not the lock file kmeans-mnist writes there: move it away"
        ) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise SummaryError(
                f"{path} is {_kind(mode)}, not the lock file kmeans-mnist writes there: move it away"
            )
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


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
    lines = text.splitlines()
    names = lines[0].split(",")
    if "k" not in names:
        raise SummaryError(f"{path} line 1: the header has no 'k' column; {fix}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split(",")
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
    what a 0.1 record did not keep (split, limit, keep-blank, repeats)."""
    scores = record.get("scores") or {}
    metrics = record.get("metrics") or {}
    values: dict[str, object] = {
        "k": record["k"],
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


def _csv_field(text: str) -> str:
    return text.replace(",", ";").replace("\n", " ").replace("\r", " ")


def summary_text(rows: list[dict[str, str]]) -> str:
    lines = [",".join(SUMMARY_COLUMNS)]
    lines += [",".join(_csv_field(row.get(name, "")) for name in SUMMARY_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


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


class Experiment:
    """root/<name>/ for one run: checks that it may be used, and updates it under its lock.

    settings: this run's data and settings, as recorded in settings.json (dataset, source,
    n_images, image_shape, split, limit, keep_blank, init, n_init, max_iter, tol, repeats,
    data_digest).
    """

    def __init__(self, folder: Path, settings: dict):
        self.folder = Path(folder)
        self.settings = {name: text_safe(value) for name, value in settings.items()}

    @property
    def name(self) -> str:
        return self.folder.name

    def check(self, ks: list[int]) -> None:
        """Before any fit: the folder can take this run's results (SummaryError if not)."""
        check_folder(self.folder, ks)
        self._check_settings(self._records())

    def update(self, k: int, record: dict, install, guard=contextlib.nullcontext, done=None) -> None:
        """Under the lock: check the settings again, write the new summary.csv, results.md/.tex
        and settings.json (the k folders' rows, with `record` for K=k) to temporary files, call
        install() (the swap of the new k<K> folder), then replace the old files; done(rows).

        guard() is entered once the lock is held (the sweep holds SIGINT/SIGTERM back there).
        A damaged summary.csv, other settings, or a failure to write the tables (disk full)
        stop it before install(): the folder and the summary then stay as they were.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with locked(self.folder):
            self._remove_abandoned()
            with guard():
                read_summary(self.folder / SUMMARY_FILE)  # a damaged one is reported, not overwritten
                records = self._records()
                self._check_settings(records)
                records[k] = record
                rows = [row_from_record(records[key], self.settings) for key in sorted(records)]
                with self._tables_replaced(rows):
                    install()
                if done is not None:
                    done(rows)

    def redraw(self) -> list[dict[str, str]]:
        """Under the lock: the K-choice chart from the folders' rows (once per sweep). Returns the rows."""
        from .kchoice import draw_k_choice, recommend

        with locked(self.folder):
            rows = self.rows()
            with _replacing(self.folder / CHART_FILE) as chart:
                draw_k_choice(chart, rows, self.describe(rows), recommend(rows))
            old = self.folder / OLD_CHART_FILE
            if old.is_file() and not old.is_symlink():
                old.unlink()  # 0.1's chart would show rows that are no longer compared there
        return rows

    def rows(self) -> list[dict[str, str]]:
        records = self._records()
        return [row_from_record(records[k], self.settings) for k in sorted(records)]

    def describe(self, rows: list[dict[str, str]] | None = None) -> str:
        """One line: what the experiment ran on and with which settings."""
        s = self.settings
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

    # -- inside -------------------------------------------------------------------------------

    def _records(self) -> dict[int, dict]:
        """k -> summary.json of every complete k<K> folder (the truth)."""
        records = {}
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return {}
        for entry in entries:
            match = re.fullmatch(r"k([1-9][0-9]{0,17})", entry.name)
            if not match or not entry.is_dir():
                continue
            path = Path(entry.path) / "summary.json"
            try:
                text = read_own_text(path)
                record = json.loads(text) if text else None
            except (SummaryError, ValueError, OSError):
                record = None
            if isinstance(record, dict) and record.get("k") == int(match.group(1)):
                records[record["k"]] = record
        return records

    def _check_settings(self, records: dict[int, dict]) -> None:
        """settings.json (or, in a folder of version 0.1, each k<K>/summary.json) must match this run."""
        path = self.folder / SETTINGS_FILE
        text = read_own_text(path)
        if text:
            try:
                recorded = json.loads(text)
            except ValueError:
                recorded = None
            if not isinstance(recorded, dict):
                raise SummaryError(f"{path} is not the settings file kmeans-mnist writes: move it away")
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
                theirs, ours = list(theirs or []), list(ours or [])
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
        with contextlib.ExitStack() as stack:
            for name, text in targets.items():
                write_text(stack.enter_context(_replacing(self.folder / name)), text)
            yield

    def _remove_abandoned(self) -> None:
        from ..atomic import remove_abandoned

        remove_abandoned(self.folder)


def _show(value) -> str:
    if isinstance(value, list):
        return "x".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, str) and len(value) > 16:
        return value[:12] + "..."
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temp path beside path; on success it atomically replaces path, else it is removed."""
    temporary = sibling_path(path, "tmp")
    try:
        yield temporary
        try:
            os.replace(temporary, path)
        except IsADirectoryError:
            raise SummaryError(
                f"{path} is a folder, not the file kmeans-mnist writes there: move it away"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
