"""The sweep summary: one row per K in root/<dataset>/summary.csv, and the elbow chart drawn from it.

Several processes may update one summary at once: the read-modify-write holds an exclusive
lock, and every file is replaced atomically, so readers never see a half-written file.
"""

import contextlib
import fcntl
import math
import os
from collections.abc import Iterator
from pathlib import Path

from .output import sibling_path

SUMMARY_COLUMNS = ("k", "inertia", "purity", "accuracy", "nmi", "ari", "n_iter", "fit_seconds", "seed")


def update_summary(root: Path, dataset_name: str, row: dict) -> Path:
    """Put one K's row into root/<dataset>/summary.csv (replacing that K's row), redraw elbow.png.

    Safe for several processes at once: the read-modify-write holds an exclusive lock, and
    both files are replaced atomically, so readers never see a half-written file. A damaged
    summary.csv raises SummaryError and is left as it is.
    """
    unknown = row.keys() - set(SUMMARY_COLUMNS)
    if unknown or "k" not in row:
        raise ValueError(f"a summary row needs 'k' and only {SUMMARY_COLUMNS}; got {sorted(row)}")
    folder = Path(root) / dataset_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary.csv"
    with _locked(folder / ".summary.lock"):
        rows = {int(old["k"]): old for old in read_summary(path)}
        rows[int(row["k"])] = {
            name: "" if row.get(name) is None else str(row[name]) for name in SUMMARY_COLUMNS
        }
        lines = [",".join(SUMMARY_COLUMNS)]
        lines += [",".join(rows[k].get(name, "") for name in SUMMARY_COLUMNS) for k in sorted(rows)]
        # both written before either replaces its file: a failure (disk full) leaves both as they were
        with _replacing(path) as summary, _replacing(folder / "elbow.png") as elbow:
            summary.write_text("\n".join(lines) + "\n")
            draw_elbow(elbow, dataset_name, [rows[k] for k in sorted(rows)])
    return path


class SummaryError(ValueError):
    """A summary.csv that cannot be read back (edited by hand, say); str() is one line for the user."""


def read_summary(path: Path) -> list[dict[str, str]]:
    """The rows of a summary.csv: none if it is missing or empty, SummaryError if it is damaged.

    Checked as strictly as update_summary needs it: the same number of fields on every line, a
    whole number K, numbers (or nothing) for inertia and accuracy, which the elbow plot draws.
    """
    fix = "correct or delete that line, or move the file away (each k<K>/summary.json keeps its run)"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise SummaryError(f"{path} is not the text file kmeans-mnist writes: move it away") from None
    if not lines:
        return []
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
        bad = [
            name for name in ("k", "inertia", "accuracy") if not _summary_value_ok(name, row.get(name, ""))
        ]
        if bad:
            raise SummaryError(
                f"{path} line {number}: {bad[0]} {row[bad[0]][:20]!r} is not a valid value; {fix}"
            )
        rows.append(row)
    return rows


def _summary_value_ok(name: str, text: str) -> bool:
    if name == "k":
        return text.isdigit() and int(text) >= 1
    try:
        return not text or math.isfinite(float(text))
    except ValueError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path (created if missing) for the duration."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temp path beside path; on success it atomically replaces path, else it is removed."""
    temporary = sibling_path(path, "tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def draw_elbow(path: Path, dataset_name: str, rows: list[dict[str, str]]) -> None:
    """Inertia against K, with accuracy on a second axis when any run knew the labels."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.5, 4), layout="constrained")
    axes = figure.add_subplot()
    ks = [int(row["k"]) for row in rows]
    inertia = [float(row["inertia"]) if row.get("inertia") else math.nan for row in rows]
    axes.plot(ks, inertia, "o-", color="tab:blue")
    axes.set_xlabel("K (clusters)")
    axes.set_ylabel("inertia", color="tab:blue")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{dataset_name}: elbow")
    known = [(k, float(row["accuracy"])) for k, row in zip(ks, rows, strict=True) if row.get("accuracy")]
    if known:
        accuracy_axes = axes.twinx()
        accuracy_axes.plot(*zip(*known, strict=True), "s--", color="tab:orange")
        accuracy_axes.set_ylabel("accuracy", color="tab:orange")
    figure.savefig(path, format="png", dpi=100)
