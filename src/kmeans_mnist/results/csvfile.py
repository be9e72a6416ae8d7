"""Every CSV the tool writes or reads back: Python's `csv` module, and cells safe to open.

Quoting is the `csv` module's (a comma, quote or line break in a folder or file name stays one
cell that Python and pandas read back as written). Text that a user or a dataset controls
(class names, file and folder names) can begin like a spreadsheet formula; such a cell gets a
leading `'` (OWASP's rule for CSV injection), so a spreadsheet shows it as text instead of
running it. Cells that are plain numbers are left as they are: `-5` is a number, not a formula.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_safe(text):
    """text with the undecodable bytes of a path (lone surrogates under a POSIX locale) written
    as \\xNN, so that every file we write stays valid UTF-8."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if isinstance(text, str) else text


def safe_cell(value) -> str:
    """One cell's text: None as empty, valid UTF-8, and a formula-like text neutralised with `'`."""
    if value is None:
        return ""
    text = text_safe(str(value))
    if text.startswith(FORMULA_STARTS) and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text


@lru_cache(maxsize=4096)
def field(value: str) -> str:
    """One cell as CSV text (neutralised, then quoted by the csv module where it needs it); for
    writers that format the numeric columns of millions of rows themselves."""
    buffer = io.StringIO()
    # lineterminator "\r\n", cut off after: the csv module quotes a cell holding any character of
    # it (with "" it would leave a line break or CR unquoted, and the row split on reading)
    csv.writer(buffer, lineterminator="\r\n").writerow([safe_cell(value)])
    return buffer.getvalue()[:-2]


def line(row: Sequence) -> str:
    """One row as a CSV line ending in "\n", every cell through safe_cell (quoted as field says)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([safe_cell(value) for value in row])
    return buffer.getvalue()[:-2] + "\n"


def write_rows(file: TextIO, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """header, then rows, to an open text file (newline=""): lines ending in "\n", cells
    quoted where a comma, quote, line break or CR needs it (see field)."""
    file.write(line(header))
    for row in rows:
        file.write(line(row))


def rows_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """The same as write_rows, as one string."""
    buffer = io.StringIO(newline="")
    write_rows(buffer, header, rows)
    return buffer.getvalue()


def read_rows(text: str) -> list[list[str]]:
    """The rows of a CSV text (ValueError if it is not CSV)."""
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ValueError(f"not CSV: {error}") from None
