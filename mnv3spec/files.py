"""Files written for the user (exports, CSV rows, plots, run folders): checked before the work
that fills them, so a bad path fails in a second rather than after minutes of work, and written
atomically.

The rule for every file a command writes (:func:`check_output`): never onto an input of the same
command (real paths compared, links resolved), and never over an existing file of another kind
than the one written (a ``--out m.onnx`` that is really a checkpoint, a ``--csv`` naming a spec):
an existing file is replaced only when it is empty or of the same :data:`KINDS` entry, judged by
its first bytes where the format has a signature and by its suffix where it has none.
"""

from __future__ import annotations

import os
import stat
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class Kind:
    """A kind of file: what to call it, its usual suffixes, and its signature when it has one."""

    description: str
    suffixes: tuple[str, ...]
    signature: Callable[[Path, bytes], bool] | None = None


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (OSError, zipfile.BadZipFile):
        return []


def _torchscript(path: Path, head: bytes) -> bool:
    names = head.startswith(b"PK\x03\x04") and _zip_names(path)
    return bool(names) and any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _torch_save(path: Path, head: bytes) -> bool:
    if head.startswith(b"\x80") and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True  # the legacy pickle format
    names = head.startswith(b"PK\x03\x04") and _zip_names(path)
    return bool(names) and not _torchscript(path, head)


def _safetensors(path: Path, head: bytes) -> bool:
    # an 8-byte little-endian header length, then the JSON header
    return len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**27


KINDS: dict[str, Kind] = {
    "png": Kind("a PNG image", (".png",), lambda _, h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    "safetensors": Kind("safetensors weights", (".safetensors",), _safetensors),
    "torchscript": Kind("a TorchScript model", (".pt", ".pth"), _torchscript),
    "torch": Kind("a PyTorch file (torch.save)", (".pt", ".pth", ".ckpt", ".bin"), _torch_save),
    "onnx": Kind("an ONNX model", (".onnx",)),
    "executorch": Kind("an ExecuTorch program", (".pte",), lambda _, h: h[4:6] == b"ET"),
    "litert": Kind("a LiteRT (TFLite) model", (".tflite",), lambda _, h: h[4:8] == b"TFL3"),
    "spec": Kind("a spec (YAML)", (".yaml", ".yml")),
    "csv": Kind("a CSV table", (".csv",)),
    "json": Kind("a JSON file", (".json",)),
    "text": Kind("a text file", (".txt", ".log")),
}


def kind_of(path: str | Path) -> str | None:
    """The :data:`KINDS` key of an existing file: by signature first, then by a suffix that only
    one kind uses; None when neither tells."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(64)
    for name, kind in KINDS.items():
        if kind.signature is not None and kind.signature(path, head):
            return name
    claims = [name for name, kind in KINDS.items() if path.suffix.lower() in kind.suffixes]
    return claims[0] if len(claims) == 1 else None


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
) -> Path:
    """``path`` if a file of ``kind`` (a :data:`KINDS` key) can be written there: its folder
    exists and is writable, it is not a folder, it ends in ``suffix`` when one is required, it
    is none of ``inputs`` (the files the command reads), and what is there now, if anything, is
    empty or a regular file of the same kind. Call it before the work; write with :func:`writing`.
    """
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
    for source in inputs:
        if _same_file(path, Path(source)):
            raise UserError(
                f"is also an input of this command ({source}); writing there would destroy it: "
                "give another file name",
                **where,
            )
    if path.exists():
        _check_replaceable(path, kind, where)
    return path


def _check_replaceable(path: Path, kind: str, where: dict) -> None:
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UserError("exists and is not a regular file (a device or a pipe?)", **where)
    if os.stat(path).st_size == 0:
        return
    try:
        found = kind_of(path)
    except OSError as e:
        raise UserError(f"exists and cannot be read ({e.strerror})", **where) from None
    if found == kind:
        return
    what = KINDS[found].description if found else "a file of a kind not recognised"
    raise UserError(
        f"exists and is {what}, not {KINDS[kind].description}; it is not replaced: give another "
        "file name, or move that file away first",
        **where,
    )


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
