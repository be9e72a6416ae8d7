"""One `error:` line, not a silent death, when a memory-mapped input is cut short while it is read.

A .npy or IDX file is memory-mapped, not copied (see data/sources.py). If another program cuts it
short while a run reads it, the pages past the new end are gone: the next read of one of them
raises SIGBUS, which kills the process with no word (exit 135). Python cannot handle that signal
itself: its handlers run later, between bytecodes, and the faulting read would fault again
forever. So a C-level handler is installed through ctypes: it writes one prepared line and ends
the process at once with os._exit, as a killed run ends (whatever was saved before stays intact,
a half-written result is cleaned up by the next run, see atomic.py). The file's size is checked
against its header before it is mapped, so this is only for a change during the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import numpy as np

_installed: list = []  # the ctypes callback, kept alive while it is installed


def mapped_file(array: np.ndarray) -> str | None:
    """The file an array (or the array it is a view of) is a memory map of, or None."""
    while array is not None:
        if isinstance(array, np.memmap) and getattr(array, "filename", None):
            return str(array.filename)
        array = array.base if isinstance(array.base, np.ndarray) else None
    return None


def say_on_sigbus(path: str, exit_code: int) -> bool:
    """From now on a SIGBUS prints one `error:` line naming `path` and exits with exit_code.
    Returns False where it cannot be installed (no SIGBUS, no C library through ctypes)."""
    if not hasattr(signal, "SIGBUS"):
        return False
    message = (
        f"error: {path} was cut short by another program while this run read it (SIGBUS: the "
        "memory-mapped data is gone); the run stopped at once, as a killed run does (results saved "
        "before are intact): run again once the file is complete\n"
    ).encode("utf-8", "backslashreplace")

    try:
        import ctypes

        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_int)

        said: list[bool] = []

        def handler(number: int) -> None:
            # The engine's threads may fault at once: the first says it and ends the process,
            # the others wait for that (os.write lets another thread's handler run meanwhile).
            said.append(True)
            if len(said) > 1:
                time.sleep(10)
            else:
                with contextlib.suppress(OSError):
                    os.write(2, message)
            os._exit(exit_code)

        callback = handler_type(handler)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.restype = ctypes.c_void_p
        libc.signal.argtypes = [ctypes.c_int, handler_type]
        _installed.append(callback)  # before it is installed: freed, it would crash the handler
        return libc.signal(int(signal.SIGBUS), callback) != ctypes.c_void_p(-1).value  # not SIG_ERR
    except (ImportError, OSError, AttributeError):
        return False
