"""``python -m mnv3spec.spec``: print the spec schema; ``--write`` regenerates schema.json and
variant.schema.json."""

import sys

from .schema import dumps, write

if sys.argv[1:] == ["--write"]:
    print("wrote " + ", ".join(map(str, write())))
else:
    sys.stdout.write(dumps())
