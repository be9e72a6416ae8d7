"""The command line, the only package that knows about arguments and exit codes.

`kmeans-mnist K [K ...]` (and `python -m kmeans_mnist`) loads a dataset once, clusters it for each
K and writes the results; `kmeans-mnist predict MODEL SOURCE` assigns new images to a saved
model. Heavy imports wait until the arguments are known, so `--help` and argument errors answer
at once. The modules, in the order a run meets them: options (the arguments), exits (exit codes,
the last line, signals), scheduler (--scheduler), preflight (memory, time and folders before any
work), fit (the fit command) and sweep (the K one after another), progress, results_table and
sigbus (what the terminal shows), predict (the predict command).
"""

from __future__ import annotations

import os
import sys

from .exits import (
    already_told,
    clear_progress,
    fail,
    handled,
    interrupted_by,
    interrupted_code,
    interrupts_unwrapped,
    say_always,
    signals_as_interrupts,
)
from .fit import run
from .options import parse_args
from .predict import predict_main
from .preflight import UsageError
from .scheduler import on_scheduler


def main(argv: list[str] | None = None, held: list[int] | None = None) -> int:
    """Entry point of `kmeans-mnist` and `python -m kmeans_mnist`; returns the exit code. held:
    the Ctrl-C that __main__ holds back while it imports this package, until main's own handler
    takes over."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with signals_as_interrupts():
        try:
            if held:  # in the instant between __main__'s check and the handler above
                raise KeyboardInterrupt
            if argv[:1] == ["predict"]:
                return predict_main(argv[1:])
            if sys.stdout is None:  # started with standard output closed (>&-): the table goes nowhere
                sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process's life)
            with interrupts_unwrapped():
                return on_scheduler(parse_args(argv), run)  # parse_args imports the pipeline, held
        except UsageError as error:
            return fail(str(error))
        except MemoryError as error:  # what the memory checks did not foresee: still one line
            reason = (str(error).splitlines() or ["an allocation failed"])[0]
            return fail(
                f"out of memory ({reason}); use --limit to cluster fewer images, a smaller K or smaller images"
            )
        except KeyboardInterrupt as interrupt:  # before any K was saved; run() words the rest
            if already_told():  # its line was said; what failed after it is the same interrupt
                return interrupted_code(interrupt)
            handled(interrupt)
            clear_progress()
            say_always(
                f"{interrupted_by(interrupt)}: no partial results were written; earlier results are intact"
            )
            return interrupted_code(interrupt)
