"""Temporary files and folders of killed runs: how a live run marks its own, and how the next run
removes the others, safely while other runs are in progress.

A temporary entry is named `.<name>.tmp-<pid>-<random>` (or `.old-` for a folder moved aside);
its writer holds a flock on it while it lives. An entry is abandoned when the process in its
name is gone and nobody holds its flock: the pid alone could be reused, the flock alone could be
taken a moment after the entry was made.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from pathlib import Path

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>[0-9]+)-[0-9a-f]+")


def sibling_path(path: Path, kind: str) -> Path:
    """A fresh hidden name beside path, e.g. .k7.tmp-<pid>-<random>."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def hold(path: Path) -> int:
    """An open descriptor of path holding its flock: tells remove_abandoned that a live run owns it."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return descriptor


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
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
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
