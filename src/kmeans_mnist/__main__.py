"""`python -m kmeans_mnist` and the `kmeans-mnist` command: the command line, imported with
Ctrl-C held.

Inside an import a Ctrl-C can come out as another error (see cli.exits.interrupts_unwrapped);
held until the command line is imported, it is told as itself. The hold stays until the command
line's own handler replaces it (cli.main is given what it held). The C module _signal, because
`import signal` imports enum, a window of its own.
"""

import _signal
import sys


def main() -> int:
    held: list[int] = []
    if _signal.getsignal(_signal.SIGINT) is not _signal.SIG_IGN:  # a job started with & ignores it
        _signal.signal(_signal.SIGINT, lambda number, frame: held.append(number))
    from .cli import main as command_line

    if held:  # Ctrl-C while Python was still starting: nothing was begun
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    return command_line(held=held)


if __name__ == "__main__":
    sys.exit(main())
