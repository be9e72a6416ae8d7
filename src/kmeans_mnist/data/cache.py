"""The parsed-data cache: arrays parsed from a slow source (a CSV file), kept as .npy files.

    arrays = cached(path, "mnist-csv", parse, check)   # parse() only when no valid entry exists

The cache lives in the user's cache folder (`~/.cache/kmeans-mnist`, see `cache_folder`), so a
run from any folder finds it; $KMEANS_MNIST_CACHE moves it. An entry is named after the source
(its absolute path) and a fingerprint of what any change to the file changes: size, modification
time, inode and device, the status-change time (ctime, which no tool can restore), and a digest
of the file's first and last 64 KiB. A `.meta.json` written last records each array's shape and
dtype and the label counts; an entry that does not match it, or that the caller's check refuses,
is parsed again. The record also names its own entry and holds a CRC-32 of each array's bytes,
checked on every read: arrays swapped in from another entry (or another source's entry whose
files were copied over this one's), of the same shape and dtype, are never served. The cache is an optimisation only: an unwritable folder, a damaged entry, or a
folder or named pipe in an entry's place make the data be parsed again, never an error or a hang.

Also here: `open_regular`, which opens a file without ever blocking on a named pipe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

CACHE_ENV = "KMEANS_MNIST_CACHE"
CACHE_VERSION = 3  # bump when the cached arrays change meaning (3: numbered CSV headers, CRC-32s)
EDGE_BYTES = 1 << 16  # bytes of the source's start and end in its fingerprint


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """cache_dir, else $KMEANS_MNIST_CACHE, else the platform's user cache folder + kmeans-mnist.

    Linux and other Unix: $XDG_CACHE_HOME or ~/.cache (where kagglehub keeps its downloads too);
    macOS: ~/Library/Caches; Windows: %LOCALAPPDATA%.
    """
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "kmeans-mnist" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "kmeans-mnist"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kmeans-mnist"


# --- files that may be something else ----------------------------------------------------------


def not_regular(mode: int) -> str | None:
    """What a file of this st_mode is when it is not a regular file ("a folder", ...), else None."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


class NotRegularFile(OSError):
    """open_regular found a folder, a named pipe or a device; str() says which."""


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for binary reading; never blocks on a named pipe.

    O_NONBLOCK makes opening a FIFO return at once (a plain open waits for a writer); the
    descriptor is then checked and refused unless it is a regular file. Raises NotRegularFile
    (an OSError) for anything else, and the usual OSError when the file cannot be opened.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        kind = not_regular(os.fstat(descriptor).st_mode)
        if kind:
            raise NotRegularFile(f"{path} is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_small_text(path: Path, limit: int = 1 << 16) -> str | None:
    """The text of a small file the tool wrote itself, or None if it is missing or not such a file."""
    try:
        with open_regular(path) as file:
            return file.read(limit).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# --- entries -----------------------------------------------------------------------------------


def short_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def fingerprint(path: Path) -> str:
    """A digest of what any change to the file changes (see the module docstring); reads 128 KiB."""
    with open_regular(path) as file:
        state = os.fstat(file.fileno())
        digest = hashlib.blake2b(digest_size=16)
        digest.update(
            f"{state.st_size}:{state.st_mtime_ns}:{state.st_ino}:{state.st_dev}:{state.st_ctime_ns}".encode()
        )
        digest.update(file.read(EDGE_BYTES))
        if state.st_size > EDGE_BYTES:
            file.seek(max(EDGE_BYTES, state.st_size - EDGE_BYTES))
            digest.update(file.read(EDGE_BYTES))
    return digest.hexdigest()


def cached(
    source: Path,
    kind: str,
    parse: Callable[[], dict[str, np.ndarray]],
    check: Callable[[dict[str, np.ndarray]], bool] | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The arrays `parse()` makes of `source`, from the cache when a valid entry is there.

    kind names the parse (the same file may be read in two ways); check(arrays) returns False
    for arrays that cannot be right (labels out of range...), which are then parsed again.
    parse() is called with no cache entry involved, and its errors go to the caller; the
    source must be a regular file (OSError otherwise, from the fingerprint).
    """
    from ..atomic import remove_abandoned

    folder = cache_folder(cache_dir)
    remove_abandoned(folder)  # a killed run's half-written .npy: gone, unless its writer still lives
    source_key = f"{source.name}-{short_digest(f'{source.resolve()}|{kind}')}"
    entry = folder / f"{source_key}-{short_digest(f'{fingerprint(source)}|{CACHE_VERSION}')}"

    arrays = _read_entry(entry)
    if arrays is not None and (check is None or check(arrays)):
        return arrays
    arrays = parse()
    if check is not None and not check(arrays):  # a parse that fails its own check is a bug, not data
        raise AssertionError(f"the arrays parsed from {source} fail their check")
    with contextlib.suppress(OSError):
        _write_entry(folder, entry, arrays)
        for stale in folder.glob(f"{source_key}-*"):
            if not stale.name.startswith(f"{entry.name}.") and not stale.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
    return arrays


def cached_by_key(
    kind: str,
    key: str,
    compute: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The arrays compute() makes, cached under a key that says everything they depend on.

    For results computed from arrays rather than parsed from a file (a feature space's embedding:
    the key holds the images' digest, the method, its parameters and the seed). Entries of other
    keys stay (a dataset may have several embeddings). Like `cached`, the cache is only an
    optimisation: an entry that cannot be read or written means compute() runs.
    """
    from ..atomic import remove_abandoned

    folder = cache_folder(cache_dir)
    remove_abandoned(folder)
    entry = folder / f"{kind}-{short_digest(f'{key}|{CACHE_VERSION}')}"
    arrays = _read_entry(entry)
    if arrays is not None:
        return arrays
    arrays = compute()
    with contextlib.suppress(OSError):
        _write_entry(folder, entry, arrays)
    return arrays


def _write_entry(folder: Path, entry: Path, arrays: dict[str, np.ndarray]) -> None:
    """Each array as entry.NAME.npy, then entry.meta.json (last: it makes the entry valid)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _save_atomically(
            Path(f"{entry}.{name}.npy"), lambda file, a=array: np.save(file, a, allow_pickle=False)
        )
    meta: dict = {
        "entry": entry.name,
        "arrays": {name: [list(array.shape), array.dtype.str] for name, array in arrays.items()},
        "crc32": {name: array_crc32(array) for name, array in arrays.items()},
    }
    if "labels" in arrays:
        meta["label_counts"] = np.bincount(arrays["labels"]).tolist()
    text = json.dumps(meta).encode()
    _save_atomically(Path(f"{entry}.meta.json"), lambda file: file.write(text))


def _read_entry(entry: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry, or None if it is missing, unreadable or does not match its meta."""
    text = read_small_text(Path(f"{entry}.meta.json"))
    try:
        meta = json.loads(text) if text else None
        if meta["entry"] != entry.name:  # another entry's record copied over this one's
            return None
        arrays = {}
        for name, (shape, dtype) in meta["arrays"].items():
            with open_regular(f"{entry}.{name}.npy") as file:
                array = np.load(file, allow_pickle=False)
            if list(array.shape) != shape or array.dtype.str != dtype:
                return None
            if array_crc32(array) != meta["crc32"][name]:  # the bytes are not those written
                return None
            arrays[name] = array
        if "labels" in arrays and np.bincount(arrays["labels"]).tolist() != meta.get("label_counts"):
            return None
    except Exception:  # whatever is wrong with an entry (a folder, a pipe, garbage), parsing again mends it
        return None
    return arrays or None


def array_crc32(array: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order: what tells an entry's arrays from any others of
    the same shape. CRC-32, not a cryptographic digest: the cache guards against mix-ups, not
    against someone who can write the cache folder (who could write the record as well), and a
    CRC costs a fraction of what blake2b costs on every cached load (figures: the commit log)."""
    return zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8))


def _save_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """write(file) to a temporary file beside `path`, then rename it to `path` (atomic.replacing)."""
    from ..atomic import replacing

    with replacing(path) as temporary, open(temporary, "wb") as file:
        write(file)
