"""Files written for the user (exports, CSV rows, plots, run folders): checked before the work
that fills them, so a bad path fails in a second rather than after minutes of work, and written
atomically.

The rule for every file a command writes (:func:`check_output`): never onto an input of the same
command (real paths compared, links resolved), and never over an existing file of another kind
than the one written (a ``--out m.onnx`` that is really a checkpoint, a ``--csv`` naming a spec):
an existing file is replaced only when it is empty or of the same kind (the one table of kinds,
:data:`mnv3spec.kinds.KINDS`), judged by its first bytes where the kind has a signature
(:func:`mnv3spec.kinds.file_kind`) and by its suffix where it has none.

The rule for every folder a command fills (:func:`claim_folder`, :func:`locked_folder`): created
exclusively, or recognised as ours by its own marker file, and locked while in use, so two
commands never share one and a folder of the user's is never written into. Every path a command
is given passes :func:`check_path` first: valid UTF-8, no component over 255 bytes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import UserError
from .kinds import KINDS, file_kind

MAX_NAME_BYTES = 255  # one path component, as Linux, macOS and Windows file systems allow
LOCK_FILE = ".lock"


def shown(path: str | Path) -> str:
    """``path`` as text that can always be printed: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_path(path: str | Path, *, field: str | None = None) -> Path:
    """``path`` if the operating system can take it as given: valid UTF-8 (a byte that is not
    is refused, since every file we write records paths as text) and no component over
    :data:`MAX_NAME_BYTES` bytes."""
    where = {"file": shown(path), "field": field}
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(
            "holds bytes that are not UTF-8 text; rename it (or give another path)", **where
        ) from None
    for part in Path(path).parts:
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise UserError(
                f"has a name of {size} bytes ({part[:20]}...); a file or folder name may have "
                f"at most {MAX_NAME_BYTES}: give a shorter one",
                **where,
            )
    return Path(path)


def kind_of(path: str | Path) -> str | None:
    """The :data:`KINDS` key of an existing file: by signature first, then by a suffix that only
    one kind uses; None when neither tells. An unreadable file raises ``OSError``."""
    return _identify(Path(path))[0]


def _identify(path: Path) -> tuple[str | None, bool]:
    """``(kind_of(path), whether the file's bytes prove it)``."""
    with open(path, "rb"):  # an unreadable file raises here, for the caller to name
        pass
    judged = file_kind(path)
    if judged is not None and KINDS[judged].signature is not None:
        return judged, True
    claims = [name for name, kind in KINDS.items() if path.suffix.lower() in kind.suffixes]
    return (claims[0] if len(claims) == 1 else None), False


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_output(
    path: str | Path,
    kind: str,
    *,
    inputs: Iterable[str | Path] = (),
    suffix: str | None = None,
    field: str | None = None,
    ours: bytes | None = None,
) -> Path:
    """``path`` if a file of ``kind`` (a :data:`KINDS` key) can be written there: its folder
    exists and is writable, it is not a folder, it ends in ``suffix`` when one is required, it
    is none of ``inputs`` (the files the command reads), and what is there now, if anything, is
    empty or a regular file of the same kind. ``ours``: the bytes every such file this command
    writes starts with (a CSV's header line, a sidecar's first key); a file of the same kind
    that does not start with them is the user's (their own CSV), and is not replaced. Call it
    before the work; write with :func:`writing`.
    """
    path = check_path(path, field=field)
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
    for source in inputs:
        if _same_file(path, Path(source)):
            raise UserError(
                f"is also an input of this command ({source}); writing there would destroy it: "
                "give another file name",
                **where,
            )
    if path.exists():
        _check_replaceable(path, kind, where)
        if ours is not None and path.stat().st_size and not _starts_with(path, ours):
            raise UserError(
                f"exists and is {KINDS[kind].noun} this command did not write (it does "
                "not start as ours do); it is not replaced: give another file name, or move "
                "that file away first",
                **where,
            )
    return path


def _starts_with(path: Path, head: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(head)) == head


def _check_replaceable(path: Path, kind: str, where: dict) -> None:
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UserError("exists and is not a regular file (a device or a pipe?)", **where)
    if os.stat(path).st_size == 0:
        return
    try:
        found, proved = _identify(path)
    except OSError as e:
        raise UserError(f"exists and cannot be read ({e.strerror})", **where) from None
    wanted = KINDS[kind]
    if found == kind and (proved or wanted.signature is None or not wanted.bytes_required):
        return
    what = KINDS[found].noun if found else "a file of a kind not recognised"
    what = f"is {what}, not {wanted.noun}"
    if found == kind:
        what = f"is named like {wanted.noun} but is not one"
    raise UserError(
        f"exists and {what}; it is not replaced: give another file name, or move that file "
        "away first",
        **where,
    )


def check_output_folder(path: str | Path, *, field: str | None = None) -> Path:
    """``path`` if files can be written in it: a writable folder, or one that can be made because
    its nearest existing parent is a writable folder."""
    path = check_path(path, field=field)
    where = {"file": str(path), "field": field}
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside {existing}, a file"
        raise UserError(f"{what}; give a folder", **where)
    if not os.access(existing, os.W_OK):
        raise UserError(f"the folder {existing} is not writable", **where)
    return path


TEMPORARY = ".tmp"  # the suffix of atomic_path's files: .NAME.XXXXXXXX.tmp
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(TEMPORARY))


def is_temporary(name: str) -> bool:
    """``name`` is that of :func:`atomic_path`'s temporary file, one a killed process left (a
    living one's is in a folder it holds locked)."""
    return _TEMPORARY.fullmatch(name) is not None


def remove_temporaries(folder: Path) -> None:
    """Remove the temporary files a killed process left in ``folder`` (one we hold locked)."""
    for path in folder.iterdir():
        if is_temporary(path.name) and path.is_file():
            path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds,
    so a crash never leaves a half-written file. The result gets the usual permissions (some
    writers, safetensors among them, create files readable by their owner only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMPORARY}")
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


def claim_folder(path: Path, marker: str, what: str, *, field: str | None = None) -> bool:
    """Make ``path`` a folder of ours: created now (exclusively: True), or found holding
    ``marker``, the file our command writes first (False). A folder holding anything else is a
    folder of the user's and is refused, whatever its name; an empty one (or one holding only a
    lock left by a killed process) is taken."""
    check_path(path, field=field)
    with os_errors(path, field=field):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            return True
        except FileExistsError:
            pass
    check_ours(path, marker, what, field=field)
    return False


def check_ours(path: Path, marker: str, what: str, *, field: str | None = None) -> None:
    """Refuse an existing ``path`` that is not a folder of ours (see :func:`claim_folder`)."""
    if not path.is_dir():
        raise UserError(f"is not a folder; give the name of a new {what}", file=shown(path))
    if (path / marker).is_file() or all(p.name == LOCK_FILE for p in path.iterdir()):
        return
    raise UserError(
        f"is a folder that is not a {what} (it has no {marker}); nothing is written into it: "
        "give the name of a new folder",
        file=shown(path),
        field=field,
    )


@contextmanager
def locked_folder(folder: Path, what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` for the block: an exclusive, non-blocking ``flock`` that the kernel
    drops when the process ends, however it ends. A second command on the folder fails at once
    naming the holder (its pid, host and start time, written into the file). The file is removed
    at the end, so a finished folder holds only its own files. ``what``: the holder, for the
    message ("training", "sweep")."""
    path = folder / LOCK_FILE
    fd = _take_lock(path, folder, what)
    try:
        os.ftruncate(fd, 0)
        holder = f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%c')}"
        os.write(fd, holder.encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: see _take_lock
        os.close(fd)


def _take_lock(path: Path, folder: Path, what: str) -> int:
    while True:
        with os_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{folder} is in use by another {what} ({holder}); two never share a folder: "
                "wait for that one to end, or stop it"
            ) from None
        try:  # the holder removes the file as it ends: a lock on the removed file counts for none
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def read_regular(path: str | Path, max_bytes: int, *, what: str, field: str | None = None) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes`` (``what`` it should be, for
    the message): a folder, a pipe or a device is refused before it is opened, so nothing blocks
    on a FIFO, and nothing huge is read into memory."""
    where = {"file": shown(path), "field": field}
    try:
        info = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}", **where) from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"is not a regular file; give {what}", **where)
    if info.st_size > max_bytes:
        raise UserError(
            f"is {info.st_size:,} bytes, more than {what} may be ({max_bytes:,}); is it the "
            "right file?",
            **where,
        )
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)[:max_bytes]
    except OSError as e:
        raise UserError(f"cannot read {what}: {e.strerror}", **where) from None


MAX_JSON_BYTES = 1 << 20  # a config.json or a worker's request holds about 1 KB


def read_json(
    path: str | Path,
    *,
    what: str,
    fix: str,
    max_bytes: int = MAX_JSON_BYTES,
    field: str | None = None,
) -> Any:
    """A JSON file this tool wrote (a run's config.json, a worker's request, a sweep's state),
    read by :func:`read_regular`'s rules (a regular file, bounded) and refused, never crashed
    on, when damaged: not UTF-8, not JSON, or nested past what Python's parser can take.
    ``fix``: what the user can do about a damaged one."""
    try:
        raw = read_regular(path, max_bytes, what=what, field=field)
    except UserError as e:
        e.message += f"; {fix}"
        raise
    where = {"file": shown(path), "field": field}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:  # JSON's own message quotes no text
        raise UserError(f"damaged: not JSON ({e}); {fix}", **where) from None
    except RecursionError:
        raise UserError(f"damaged: JSON nested thousands of levels deep; {fix}", **where) from None
