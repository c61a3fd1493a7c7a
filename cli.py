"""``python cli.py COMMAND ...``: the command line of mnv3spec (:mod:`mnv3spec.cli`)."""

import sys

from mnv3spec.cli import main

if __name__ == "__main__":
    sys.exit(main())
