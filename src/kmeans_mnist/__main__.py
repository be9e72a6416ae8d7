"""`python -m kmeans_mnist K [K ...]`: see cli.py."""

import sys

from .cli import main

sys.exit(main())
