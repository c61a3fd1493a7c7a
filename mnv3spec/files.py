"""Files written for the user (exports, CSV rows, plots, run folders): checked before the work
that fills them, so a bad path fails in a second rather than after minutes of work, and written
atomically."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def check_output_folder(path: str | Path, *, field: str | None = None) -> Path:
    """``path`` if files can be written in it: a writable folder, or one that can be made because
    its nearest existing parent is a writable folder."""
    path = Path(path)
    where = {"file": str(path), "field": field}
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside {existing}, a file"
        raise UserError(f"{what}; give a folder", **where)
    if not os.access(existing, os.W_OK):
        raise UserError(f"the folder {existing} is not writable", **where)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds,
    so a crash never leaves a half-written file. The result gets the usual permissions (some
    writers, safetensors among them, create files readable by their owner only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def os_errors(
    path: str | Path, *, field: str | None = None, kinds: tuple[type[Exception], ...] = (OSError,)
) -> Iterator[None]:
    """An operating-system failure in the block (disk full, permissions changed) reported as a
    :class:`UserError` naming ``path``; ``kinds`` adds the exceptions a library wraps it in."""
    try:
        yield
    except kinds as e:
        raise UserError(
            f"cannot write: {getattr(e, 'strerror', None) or e}", file=str(path), field=field
        ) from None


@contextmanager
def writing(path: str | Path, *, field: str | None = None) -> Iterator[Path]:
    """:func:`atomic_path`, with :func:`os_errors`."""
    with os_errors(path, field=field), atomic_path(path) as tmp:
        yield tmp
