"""Files written for the user (exports, CSV rows, plots): checked before the work that fills them,
so a bad path fails in a second rather than after minutes of timing, and written atomically."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import atomic_path
from .errors import UserError


def check_output(path: str | Path, *, suffix: str | None = None, field: str | None = None) -> Path:
    """``path`` if a file can be written there: its folder exists and is writable, it is not a
    folder itself, and it ends in ``suffix`` when one is required."""
    path = Path(path)
    where = {"file": str(path), "field": field}
    if suffix and path.suffix.lower() != suffix:
        raise UserError(f"must end in {suffix}", **where)
    if path.is_dir():
        raise UserError("is a folder; give a file name", **where)
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"the folder {folder} does not exist", **where)
    if not os.access(folder, os.W_OK):
        raise UserError(f"the folder {folder} is not writable", **where)
    return path


@contextmanager
def writing(path: str | Path, *, field: str | None = None) -> Iterator[Path]:
    """:func:`atomic_path`, with an operating-system failure (disk full, permissions changed)
    reported as a :class:`UserError` naming the file."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except OSError as e:
        raise UserError(f"cannot write: {e.strerror or e}", file=str(path), field=field) from None
