"""What the runtimes' native libraries write to the process's stderr.

ExecuTorch and LiteRT log from C++ straight to file descriptor 2, below Python's ``sys.stderr``:
ExecuTorch five lines of its CPU probe (cpuinfo) the first time its thread pool is used, LiteRT a
line each time it applies its XNNPACK delegate and its converter absl's INFO lines. Those lines
are about this machine or the converter, not about the user's file, and they would sit between
ours. :func:`stderr_without` keeps them out at the call that prints them, and writes back
anything else the call printed (an error of theirs stays seen).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def stderr_without(noise: re.Pattern[bytes]) -> Iterator[None]:
    """The block run with file descriptor 2 caught in a temporary file; then every caught line
    that ``noise`` does not match is written back to it, in order."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to keep anything out of
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(x for x in caught.read().splitlines(True) if not noise.match(x))
            while kept:
                kept = kept[os.write(2, kept) :]
