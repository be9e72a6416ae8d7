"""Atomic files, folders and locks: the one place where the tool replaces, swaps and locks.

A reader never sees half a file: everything is written to a hidden temporary entry beside its
target, `.<name>.tmp-<pid>-<random>` (`.old-` for a folder moved aside), and renamed into place
only when complete. The writer holds a flock on its temporary entry while it lives, so that the
next run can tell a killed run's leftovers (process gone, flock free: removed) from a live run's
(the pid alone could be reused; the flock alone could be taken a moment after the entry was made).

Nothing here follows a symbolic link out of its folder: temporary entries are created with
O_EXCL / mkdir, the lock file is opened with O_NOFOLLOW.

POSIX only (flock); the package says so in its metadata. The engine and the estimator never
import this module, so `KMeans` works on any platform.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>[0-9]+)-[0-9a-f]+")


class NotOurs(OSError):
    """Something that is not ours (a folder, a pipe, a link) sits where we write; str() is one line."""


def sibling_path(path: Path, kind: str) -> Path:
    """A fresh hidden name beside path, e.g. .k7.tmp-<pid>-<random>."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def hold(path: Path) -> int:
    """An open descriptor of path holding its flock: tells remove_abandoned that a live run owns it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


def kind_of(mode: int) -> str:
    """What a non-regular entry is, in words."""
    for test, words in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return words
    return "not a regular file"


# --- files and folders ---------------------------------------------------------------------


@contextlib.contextmanager
def replacing(
    path: Path,
    what: str = "the file kmeans-mnist writes there",
    held: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    replaced: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """A temporary path beside `path`, claimed while the block runs; on success it replaces `path`
    in one rename, on any failure (or Ctrl-C) it is removed and `path` is as it was.

    held(): the context the rename happens in (signals_held: an interrupt waits for it);
    replaced(): told inside it, right after the rename, so a caller knows which side it is on."""
    path = Path(path)
    temporary = sibling_path(path, "tmp")
    claim = None
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
        claim = hold(temporary)
        yield temporary
        try:
            with held():
                os.replace(temporary, path)
                if replaced is not None:
                    replaced()
        except IsADirectoryError:
            raise NotOurs(f"{path} is a folder, not {what}: move it away") from None
    finally:
        if claim is not None:
            os.close(claim)
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text(path: Path, text: str) -> None:
    """Replace the text file `path` atomically (UTF-8)."""
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """A claimed, empty, hidden folder beside `target` to fill; removed if the block fails.
    The caller moves it into place (swap_folder) before the block ends."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_path(target, "tmp")
    claim = None
    try:
        staging.mkdir()  # inside the try: a Ctrl-C just after it must not leave the folder behind
        claim = hold(staging)  # while held, no other run takes it for a killed run's leftover
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if claim is not None:
            os.close(claim)


def swap_folder(staging: Path, target: Path, between: Callable[[], None] | None = None) -> None:
    """Replace the folder `target` by `staging`: move the old one aside, rename, delete the old one.
    A failure between the renames puts the old folder back. between(): the test hook's window."""
    aside = sibling_path(target, "old")
    try:
        if target.exists():
            os.rename(target, aside)
        if between is not None:
            between()
        os.rename(staging, target)
    except BaseException:
        if aside.exists() and not target.exists():
            os.rename(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


# --- locks ---------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive flock of the lock file `path` for the block (created if missing).

    The lock file must be a regular file of its own: a folder, a pipe or a symbolic link there
    (even a dangling one, which would create a file wherever it points) raises NotOurs.
    """
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, 0o644)
    except IsADirectoryError:
        raise NotOurs(
            f"{path} is a folder, not the lock file kmeans-mnist writes there: move it away"
        ) from None
    except OSError as error:
        if os.path.islink(path):
            raise NotOurs(
                f"{path} is a symbolic link, not the lock file kmeans-mnist writes there: move it away"
            ) from None
        raise error
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotOurs(
                f"{path} is {kind_of(mode)}, not the lock file kmeans-mnist writes there: move it away"
            )
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# --- what killed runs left -----------------------------------------------------------------


def remove_abandoned(folder: Path) -> None:
    """Delete what killed runs left in folder; put a `.k7.old-..` back when k7 itself is missing.
    Best effort: errors are ignored."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _LEFTOVER.fullmatch(entry.name)
        if not match or _alive(int(match["pid"])) or _held(Path(entry.path)):
            continue
        path, target = Path(entry.path), Path(folder) / match["name"]
        with contextlib.suppress(OSError):
            if match["kind"] == "old" and not os.path.lexists(target):
                os.rename(path, target)
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _held(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return False


# --- signals held while a step must finish whole --------------------------------------------

HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held(deliver: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back until the block is done, then deliver the first one received
    to the handler that was in place (deliver=False drops them: a caller already on its way out).

    The Python-level handlers are swapped rather than the signal mask, because the engine's
    worker threads would still receive a masked signal.
    """
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda n, frame: received.append(n)) for number in HELD_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received and deliver:
        signal.raise_signal(received[0])


TEST_HOOK = "KMEANS_MNIST_TEST_HOOK"


def checkpoint(point: str, k: int | None = None) -> None:
    """A named point of a run where the tests of the interrupt windows act, deterministically.

    $KMEANS_MNIST_TEST_HOOK lists "POINT=SIGNAL" or "POINT@K=SIGNAL" items separated by ";"
    (e.g. "swapped@5=SIGKILL"): at that point the process sends itself that signal (SIGINT,
    SIGTERM, SIGKILL, or SIGSTOP to wait there until a SIGCONT). Points, in order: fitted,
    staged (folder written, lock not yet taken), locked (lock held, signals held), aside (old
    folder moved aside), swapped (new folder in place, tables not yet replaced), saved (tables
    replaced, still in the window), drawing (the chart, once per sweep). Unset: nothing happens.
    """
    spec = os.environ.get(TEST_HOOK)
    if not spec:
        return
    for item in spec.split(";"):
        where, _, action = item.strip().partition("=")
        name, _, only_k = where.partition("@")
        if name == point and (not only_k or (k is not None and only_k == str(k))):
            os.kill(os.getpid(), getattr(signal, action.strip()))
