"""`python -m kmeans_mnist K [K ...]`: see cli.py."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python was still starting: nothing was begun
    exec("")  # tell CPython the interrupt was handled (see cli._handled)
    print("interrupted: nothing was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
