"""`python -m kmeans_mnist` and the `kmeans-mnist` command: the command line, imported with
Ctrl-C held.

Inside an import a Ctrl-C can come out as another error (see cli.exits.interrupts_unwrapped); held
until the command line is imported, it is told as itself. The C module _signal, because
`import signal` imports enum, a window of its own.
"""

import _signal
import sys


def main() -> int:
    held: list[int] = []
    previous = _signal.signal(_signal.SIGINT, lambda number, frame: held.append(number))
    try:
        from .cli import main as command_line
    finally:
        _signal.signal(_signal.SIGINT, previous)
    if held:  # Ctrl-C while Python was still starting: nothing was begun
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
