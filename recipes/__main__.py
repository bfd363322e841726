"""``python -m recipes ...``: the same command line as ``flint ...``."""

import sys

from recipes.cli import main

if __name__ == "__main__":
    sys.exit(main())
