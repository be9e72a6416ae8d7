"""How a command ends: its exit code and its one last line (`error: ...`, `interrupted: ...`), and
SIGINT/SIGTERM taken as interrupts however they surface.

Exit codes: 0 on success, 2 with one `error:` line for anything the user can fix, 130 when
interrupted (143 for SIGTERM), 141 when stdout is closed early.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_BROKEN_PIPE = 141  # stdout closed early (`| head`), as a writer killed by SIGPIPE
EXIT_TERMINATED = 143  # SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly as Ctrl-C (cleanup, message), exit code 143."""


_received: list[int] = []  # SIGINT/SIGTERM that arrived while signals_as_interrupts() was in force
_told: list[BaseException] = []  # the interrupts whose line was said (see handled)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated, as Python's own handler would, and
    each is remembered for interrupts_unwrapped(). A signal the parent ignores stays ignored (a
    job started with `&` from a script ignores Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return

    def interrupt(number, frame):
        _received.append(number)
        raise Terminated if number == signal.SIGTERM else KeyboardInterrupt

    def again_if_dropped(unraisable) -> None:
        """An interrupt raised inside a callback Python cannot raise from (importlib's weakref
        callbacks run during any import) is printed as "Exception ignored" and lost: deliver it
        again, from a moment later, where it can stop the run."""
        if not (isinstance(unraisable.exc_value, KeyboardInterrupt) and _received):
            previous_hook(unraisable)
            return
        again = threading.Timer(0.001, _thread.interrupt_main, [_received[-1]])
        again.daemon = True
        again.start()

    previous = {
        number: signal.signal(number, interrupt)
        for number in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(number) is not signal.SIG_IGN
    }
    previous_hook, sys.unraisablehook = sys.unraisablehook, again_if_dropped
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()
        _told.clear()


@contextlib.contextmanager
def interrupts_unwrapped() -> Iterator[None]:
    """Give back an interrupt that came out as another exception. One that lands inside an import
    does: Python 3.11 wraps it in a RuntimeError when it hits a class's __set_name__ (ipaddress's,
    under kagglehub), NumPy's C start-up reports it as "ImportError: PyCapsule_Import could not
    import module datetime". Any error after a SIGINT or SIGTERM arrived is that interrupt's."""
    try:
        yield
    except Exception as error:
        if not _received or threading.current_thread() is not threading.main_thread():
            raise
        raise (Terminated if _received[0] == signal.SIGTERM else KeyboardInterrupt)() from error


def import_held(*modules: str) -> None:
    """Import the modules (names relative to this package, as "..features") with SIGINT and
    SIGTERM held until they are whole (tens of milliseconds, NumPy among them): an interrupt
    inside an import can come out as another error (see interrupts_unwrapped), leave NumPy half
    imported, or be dropped by importlib's own callbacks. Held, it arrives as itself. Called once
    --help and the arguments are done, which need none of it."""
    from importlib import import_module

    from ..atomic import signals_held

    with signals_held():
        for name in modules:
            import_module(name, __package__)


def handled(interrupt: BaseException) -> None:
    """Note that the interrupt's line is being said (an error while, say, a Dask cluster closes
    after it is the same interrupt, not news), and tell CPython that it was handled: one that
    passed through exec() of a string on its way (scipy's imports do that) sets a flag that makes
    `python -m` kill itself with SIGINT at exit, whatever the exit code; any exec() of a string
    clears that flag."""
    _told.append(interrupt)
    exec("")


def already_told() -> bool:
    """Whether an interrupt's line was said in this run."""
    return bool(_told)


def interrupted_by(interrupt: BaseException) -> str:
    """How an interrupt's line begins."""
    return "interrupted by SIGTERM" if isinstance(interrupt, Terminated) else "interrupted"


def interrupted_code(interrupt: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def fail(message: str) -> int:
    clear_progress()
    say_always(f"error: {message}")
    return EXIT_USAGE


def say_always(text: str) -> None:
    """A line on stderr; a closed stderr is not worth a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def clear_progress() -> None:
    """A progress line or bar on screen goes before a message takes its place."""
    progress = sys.modules.get(f"{__package__}.progress")  # loaded only once a run has started
    if progress is not None:
        with contextlib.suppress(OSError, ValueError):
            progress.clear()


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def os_reason(error: OSError) -> str:
    return error.strerror or (str(error).splitlines() or [type(error).__name__])[0]


def write_advice(error: OSError) -> str:
    """What to do about a failed write (its temp files are already gone)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space or choose another --output"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose an --output folder you can write to"
    return "check the --output folder"
