"""``python -m keyseat_client --server URL --key KEY``: the reference client."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
