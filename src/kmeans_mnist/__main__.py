"""`python -m kmeans_mnist K [K ...]`: see cli.py.

Ctrl-C is held while the command line is imported: inside an import it can come out as another
error (see cli._interrupts_unwrapped). The C module _signal, because `import signal` imports enum,
a window of its own.
"""

import _signal
import sys

_held: list[int] = []
_previous = _signal.signal(_signal.SIGINT, lambda number, frame: _held.append(number))
try:
    from .cli import main
finally:
    _signal.signal(_signal.SIGINT, _previous)
if _held:  # Ctrl-C while Python was still starting: nothing was begun
    print("interrupted: nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
