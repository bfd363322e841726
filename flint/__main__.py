"""``python -m flint ...``: the same command line as ``flint ...``."""

import sys

from flint.recipes.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
