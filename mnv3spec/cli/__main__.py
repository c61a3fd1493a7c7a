"""``python -m mnv3spec.cli COMMAND ...``: how ``sweep`` starts each variant's ``train``."""

import sys

from mnv3spec.cli import main

sys.exit(main())
