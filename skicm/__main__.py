"""``python -m skicm``: the same as the ``skicm`` command."""

import sys

from skicm.cli import main

if __name__ == "__main__":
    sys.exit(main())
