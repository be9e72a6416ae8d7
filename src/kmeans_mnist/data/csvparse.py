"""A fast, strict parser for CSV files of `label,pixel,pixel,...` rows (Kaggle's MNIST format and kin).

    pixels, labels = parse_pixel_csv(path, header=check, n_fields=785, label_max=9)

The file is read in blocks of `CHUNK_BYTES`, so memory holds the parsed arrays and one block,
never the whole text: a file larger than memory fails cleanly, and a file that is wrong on its
first line fails at once without reading the rest. numpy works on the bytes of each block.
Every value is 1 to 3 decimal digits, 0..255; the label at most `label_max`. Anything else
raises DatasetError naming the file and the first bad line. LF or CRLF line endings, a UTF-8 BOM
and a missing final newline are accepted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import numpy as np

from .cache import open_regular
from .errors import DatasetError

CHUNK_BYTES = 1 << 20  # CSV text parsed per step: small enough to stay in the CPU cache
MAX_LINE_BYTES = 1 << 24  # a longer line is not one image's row (16 MiB: 4 million pixels)
MAX_HEADER_BYTES = 1 << 16  # how far a known header is looked for: a file wrong on line 1 fails at once

_BOM = b"\xef\xbb\xbf"
_PAD = b"\n\n\n\n"  # the 4 bytes before a block's first field, as after a line's end
_NEWLINE_NIBBLE = ord("\n") & 15
_AFTER_NEWLINE = 0x100  # table flag: the byte before the field is a newline
_BAD_FIELD = 0x200  # table flag: empty, more than 3 digits, or over 255


def parse_pixel_csv(
    path: Path,
    *,
    header: Callable[[bytes], None] | None,
    n_fields: int | None,
    label_max: int | None,
    layout: Callable[[int], bool] | None = None,
    what: str = "CSV rows of label,pixel...",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Parse `path` into (pixels uint8 rows x P, labels int64 rows or None).

    header: a function that raises DatasetError unless the first line is the expected header;
    None: a header is optional (a first line with anything but digits and commas is skipped, and
    so is one of column numbers 0,1,2,... as pandas writes them: see `numbered_columns`).
    n_fields: fields per row, or None to take it from the first data line; then layout(n_fields)
    returns whether the first field is a label (and raises DatasetError for a width it cannot
    use, before the rest of the file is read). label_max: the largest label allowed.
    """
    try:
        file = open_regular(path)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    with file:
        try:
            return _parse(file, path, header, n_fields, label_max, layout, what)
        except MemoryError:
            raise DatasetError(
                f"{path} is too large to parse in memory: save the images as a .npy file "
                "(N x H x W uint8), which is read without loading it whole"
            ) from None
        except OSError as error:
            raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error


def _parse(file, path, header, n_fields, label_max, layout, what):
    pending = bytearray(file.read(CHUNK_BYTES))
    start = len(_BOM) if pending.startswith(_BOM) else 0
    if len(pending) == start:
        raise DatasetError(f"{path} is empty: expected {what}")
    # line 1, read no further than a header can be long (a known header fits in one block)
    limit = MAX_LINE_BYTES if header is None else MAX_HEADER_BYTES
    while (end := pending.find(b"\n", start)) < 0 and len(pending) < limit:
        more = file.read(CHUNK_BYTES)
        if not more:
            break
        pending += more
    first_line = bytes(pending[start:end] if end >= 0 else pending[start:limit])
    if header is not None:
        header(first_line[:-1] if first_line.endswith(b"\r") else first_line)
        has_header = True
    else:  # anything but digits and commas, or the column numbers pandas writes: a header, skipped
        line = first_line.rstrip(b"\r")
        has_header = bool(line.translate(None, b"0123456789,")) or numbered_columns(line)
    if end < 0 and len(pending) >= limit:
        raise DatasetError(f"{path} line 1 is longer than {limit:,} bytes: expected {what}")
    if has_header:
        del pending[: end + 1 if end >= 0 else len(pending)]
    else:
        del pending[:start]

    pixels, labels = [], []
    line_number, eof, with_label = (2 if has_header else 1), False, None
    while True:
        while not eof and len(pending) < CHUNK_BYTES:
            more = file.read(CHUNK_BYTES)
            pending += more
            eof = not more
        cut = pending.rfind(b"\n") + 1
        if eof and len(pending) > cut:  # no final newline
            pending += b"\n"
            cut = len(pending)
        if not cut:
            if eof:
                break
            if len(pending) > MAX_LINE_BYTES:
                raise DatasetError(f"{path} line {line_number} is longer than {MAX_LINE_BYTES >> 20} MiB")
            more = file.read(CHUNK_BYTES)
            pending += more
            eof = not more
            continue
        block = bytes(pending[:cut])
        del pending[:cut]
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")  # a CR left now is a stray one, refused below
        if n_fields is None:
            if block.startswith(b"\n"):
                raise DatasetError(f"{path} line {line_number}: empty line")
            n_fields = block.count(b",", 0, block.index(b"\n")) + 1
        if with_label is None:
            with_label = True if layout is None else layout(n_fields)
        top = label_max if with_label else None
        text = _PAD + block
        fields = _decode_lines(text, len(_PAD), len(text), n_fields, top)
        if fields is None:
            _raise_first_bad_line(path, block, line_number, n_fields, top)
        pixels.append(fields[:, 1:] if with_label else fields)
        if with_label:
            labels.append(fields[:, 0].astype(np.int64))
        line_number += len(fields)
        if eof and not pending:
            break
    if not pixels:
        raise DatasetError(f"{path} has a header but no data rows" if has_header else f"{path} is empty")
    all_pixels = np.concatenate(pixels) if len(pixels) > 1 else np.ascontiguousarray(pixels[0])
    return all_pixels, (np.concatenate(labels) if with_label else None)


def numbered_columns(line: bytes) -> bool:
    """Whether a line is the column numbers 0,1,2,... (or 1,2,3,...): the header that
    `pandas.DataFrame(array).to_csv(index=False)` writes. An image whose pixels count up one by
    one from its first is not a picture anyone clusters; such a line is a header, never a row."""
    fields = line.split(b",")
    if len(fields) < 2 or not all(field.isdigit() for field in fields):
        return False
    first = int(fields[0])
    return first in (0, 1) and fields == [str(first + i).encode() for i in range(len(fields))]


@functools.cache
def _field_table() -> np.ndarray:
    """Decode table for one field, indexed by the low nibbles of the 4 bytes before its terminator.

    In a file of digits, ',' and '\\n' only, a byte's low nibble tells which it is (0-9, 0xC,
    0xA). Key bits 0-3: byte p-4, 4-7: p-2, 8-11: p-3, 12-15: p-1 (the units digit), for the
    terminator at p. The entry holds the value in its low byte, and the two flags above.
    """
    key = np.arange(1 << 16)
    before, tens, hundreds, units = key & 15, (key >> 4) & 15, (key >> 8) & 15, key >> 12
    has_tens = tens < 10
    has_hundreds = has_tens & (hundreds < 10)
    value = units + has_tens * (10 * tens + has_hundreds * 100 * hundreds)
    lead = np.where(~has_tens, tens, np.where(~has_hundreds, hundreds, before))  # the byte before the field
    bad = (units >= 10) | (has_hundreds & (before < 10)) | (value > 255)
    entry = np.where(bad, _BAD_FIELD, value) | np.where(lead == _NEWLINE_NIBBLE, _AFTER_NEWLINE, 0)
    return entry.astype(np.uint16)


def _decode_lines(
    text: bytes, begin: int, end: int, n_fields: int, label_max: int | None
) -> np.ndarray | None:
    """The values of the whole data lines text[begin:end] as rows x n_fields uint8, or None if any is bad.

    Every field ends at a ',' or '\\n' (the only bytes below '0' in a good file); the 4 bytes
    before each terminator, looked up in `_field_table`, give its value and check its form.
    text[begin - 1] must be a newline: the end of the header or of the previous line.
    """
    chunk = np.frombuffer(text, dtype=np.uint8, count=end - begin, offset=begin)
    rows = np.count_nonzero(chunk == ord("\n"))
    terminators = chunk < ord("0")
    n_commas = np.count_nonzero(chunk == ord(","))
    if np.count_nonzero(chunk > ord("9")) or np.count_nonzero(terminators) != rows + n_commas:
        return None  # a byte that is not a digit, ',' or '\n'
    # windows[i] = text[begin - 4 + i : begin + i] as a little-endian uint32: an overlapping view
    windows = np.ndarray(shape=(end - begin,), dtype="<u4", buffer=text, offset=begin - 4, strides=(1,))
    keys = windows[terminators]
    high = keys >> 12
    high &= 0xF0F0
    keys &= 0x0F0F
    keys |= high  # the low nibbles of the 4 bytes, in the order `_field_table` wants
    fields = _field_table()[keys]
    if len(fields) != rows * n_fields:
        return None
    fields = fields.reshape(rows, n_fields)
    flags = fields >> 8
    # well formed, n_fields a line (a newline before the first field of each line, and before no other)
    if (flags[:, 0] != 1).any() or flags[:, 1:].any():
        return None
    values = fields.astype(np.uint8)
    if label_max is not None and label_max < 255 and (values[:, 0] > label_max).any():
        return None
    return values


def _raise_first_bad_line(
    path: Path, lines: bytes, first_line: int, n_fields: int, label_max: int | None
) -> NoReturn:
    """Find the first bad line among `lines` (whole lines, numbered from first_line) and raise for it."""
    split_lines = lines[:-1].split(b"\n")
    for number, line in enumerate(split_lines, start=first_line):
        problem = _line_problem(line, n_fields, label_max)
        if problem:
            raise DatasetError(f"{path} line {number}: {problem}")
    # not reached while the fast checks and these agree; kept so that a bad file never passes
    last_line = first_line + len(split_lines) - 1
    raise DatasetError(f"{path} lines {first_line}-{last_line}: malformed data")


def _line_problem(line: bytes, n_fields: int, label_max: int | None) -> str | None:
    """What is wrong with one data line, or None."""
    if not line:
        return "empty line"
    if b"\r" in line:
        return "stray carriage return (CR) inside the line"
    fields = line.split(b",")
    if len(fields) != n_fields:
        return f"{len(fields)} fields, expected {n_fields}"
    for column, field in enumerate(fields, start=1):
        kind, top = ("label", label_max) if column == 1 and label_max is not None else ("value", 255)
        shown = field[:20].decode("utf-8", "replace")
        if not field:
            return f"field {column} is empty"
        if not field.isdigit():  # bytes: ASCII digits only
            return f"{shown!r} is not an unsigned integer (field {column})"
        if len(field) > 3 or int(field) > top:
            return f"{kind} {shown} out of range 0..{top} (field {column})"
    return None


def printable(text: str) -> str:
    """text with control characters and line breaks escaped, so that a message stays on one line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
