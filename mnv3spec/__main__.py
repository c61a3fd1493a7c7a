"""``python -m mnv3spec COMMAND ...``: the command line, as ``mnv3spec`` and ``python cli.py``."""

import sys

from mnv3spec.cli import main

sys.exit(main())
