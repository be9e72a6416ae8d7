"""What the data modules share below datasets.py, so that none of them imports it (it imports
them): DatasetError, the names of the named datasets, the regular-file check."""

from __future__ import annotations

from pathlib import Path

from . import cache

DATASETS = ("mnist", "fashion", "usps", "files")  # --dataset; "files": the user's own
SPLITS = ("train", "test", "all")


class DatasetError(ValueError):
    """A problem with the user's data or data options; str() is one line meant for the user."""


def require_file(path: Path, missing: str) -> None:
    """Raise DatasetError unless path is a regular file: `missing` when it does not exist, else what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(missing) from None
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from error
    kind = cache.not_regular(mode)
    if kind:
        raise DatasetError(f"{path} is {kind}, not a regular file: put the file itself there")
