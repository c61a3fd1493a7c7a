"""File → YAML document: bounded reads of regular files only, safe YAML, a position for every value.

Every problem becomes a :class:`SpecError` naming the file (and line and column where there is one).
"""

from __future__ import annotations

import os
import re
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..kinds import KINDS, file_kind
from ..text import printable, quoted
from .limits import MAX_DEPTH, MAX_ROWS, MAX_SPEC_BYTES, MAX_VALUES

Where = tuple  # a position in the document: ("layers", 3, "nl")
# Opening brackets libyaml may scan ahead of the events in a blink; a spec of 256 rows has ~600.
_LIBYAML_BRACKETS = 4096


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present: faster
    """The safe loader, also reading YAML 1.2 floats such as ``1e-5`` (YAML 1.1 wants a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_scalar(text: str) -> Any:
    """One YAML value read by the spec loader's rules (``--set`` values)."""
    return yaml.load(text, Loader=_Loader)  # a safe loader


def field_name(where: Where) -> str:
    """``("layers", 3, "nl")`` → ``layers[3].nl``."""
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Marks:
    """Line and column of every key and value in a YAML document, for error messages."""

    def __init__(self, file: str, private: bool = False) -> None:
        self.file = file
        self.private = private  # a file not being checked: its values are never quoted
        self.values: dict[Where, yaml.Mark] = {}
        self.keys: dict[Where, yaml.Mark] = {}
        self.overridden: dict[Where, str] = {}  # where → the override (KEY=VALUE) that set it
        self.nodes: set[int] = set()

    def copy(self) -> Marks:
        """Marks for a derived document: the same positions, its own record of overrides."""
        other = Marks(self.file, self.private)
        other.values, other.keys, other.nodes = self.values, self.keys, self.nodes
        other.overridden = dict(self.overridden)
        return other

    def file_of(self, where: Where) -> str:
        """The file the value at ``where`` stands in (one file here; a variant's marks differ)."""
        return self.file

    def error(self, message: str, where: Where = (), key: bool = False) -> SpecError:
        name = field_name(where) or None
        for n in range(len(where), 0, -1):
            if where[:n] in self.overridden:
                return SpecError(message, field=f"set {self.overridden[where[:n]]}: {name}")
        # An override elsewhere in the same row (say layers.3.op=pool) may be what broke it.
        row_edits = [v for k, v in self.overridden.items() if len(where) > 1 and k[:2] == where[:2]]
        if row_edits:
            message = f"{message} (the row as overridden with {', '.join(row_edits)})"
        mark = (self.keys if key else self.values).get(where)
        while mark is None and where:
            where = where[:-1]
            mark = self.values.get(where)
        return self.at(message, mark, name)

    def at(self, message: str, mark: yaml.Mark | None, name: str | None = None) -> SpecError:
        if mark is None:
            return SpecError(message, file=self.file, field=name)
        line, column = mark.line + 1, mark.column + 1
        return SpecError(message, file=self.file, line=line, column=column, field=name)

    def record(self, node: yaml.Node, where: Where = ()) -> None:
        if id(node) in self.nodes:  # an alias: the composer hands back the anchored node again
            raise self.at(
                "anchors and aliases (&name, *name) are not allowed in a spec; write the value out",
                node.start_mark,
                field_name(where) or None,
            )
        self.nodes.add(id(node))
        self.values[where] = node.start_mark
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, value in node.value:
                # A complex key ({a: 1}: 2) cannot be hashed; construction refuses it below.
                name = key.value if isinstance(key, yaml.ScalarNode) else f"<{key.tag}>"
                if name in seen:
                    raise self.at(
                        f"the key {quoted(name)} appears twice in the same mapping; keep one",
                        key.start_mark,
                        field_name((*where, name)),
                    )
                seen.add(name)
                self.keys[(*where, name)] = key.start_mark
                self.record(value, (*where, name))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.record(item, (*where, i))


def _check_shape(text: str, marks: Marks) -> None:
    """Refuse deep nesting and a flood of values before composing: PyYAML's composer recurses
    once per level, and the work after it grows with the values. Events come from libyaml as
    they are parsed, but its scanner reads every opening bracket ahead (seconds on 100,000 of
    them), so text with many brackets goes to PyYAML's pure-Python parser, which yields events
    as it goes and so stops at either bound."""
    many = text.count("[") + text.count("{") > _LIBYAML_BRACKETS
    loader = (yaml.SafeLoader if many else getattr(yaml, "CSafeLoader", yaml.SafeLoader))(text)
    depth = count = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            count += isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent))
            if count > MAX_VALUES:
                raise marks.at(
                    f"holds more than {MAX_VALUES:,} values (keys, values, rows); a spec of "
                    f"{MAX_ROWS} rows needs about 5,500",
                    event.start_mark,
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise marks.at(
                        f"nested more than {MAX_DEPTH} levels deep; a spec needs 3 "
                        "(the top level, layers, a row)",
                        event.start_mark,
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def read_yaml(text: str, file: str, private: bool = False) -> tuple[Any, Marks]:
    """Safe-load one YAML document, recording where each value stands; aliases are refused.

    ``private``: the file is not the one being checked (a variant's base), so an error says
    where and what kind of problem, never the file's text (PyYAML's messages quote it)."""
    marks = Marks(file, private)
    try:
        _check_shape(text, marks)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                marks.record(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise marks.at(f"not valid YAML{_problem(e, private)}", mark) from None
    except yaml.YAMLError as e:
        # e.g. a control character: PyYAML's text spans lines, so it is put on one
        said = "" if private else f": {printable(' '.join(str(e).split()))}"
        raise SpecError(f"not valid YAML{said}", file=file) from None
    except (ValueError, OverflowError):  # a 5,000-digit integer, a date such as 2024-02-30
        raise SpecError(
            "not a spec: a value cannot be read (a number thousands of digits long, or a date "
            "that does not exist?)",
            file=file,
        ) from None
    return data, marks


def _problem(e: yaml.MarkedYAMLError, private: bool) -> str:
    """PyYAML's words for a syntax error (``: mapping values are not allowed here``), none
    for a private file: they may quote its text."""
    tags = " (tags that build Python objects are never executed; only plain YAML)"
    tags *= isinstance(e, yaml.constructor.ConstructorError)
    if private:
        return f" (its text is not shown: it is not the spec being checked){tags}"
    return ": " + printable(" ".join(str(p) for p in (e.context, e.problem) if p)) + tags


def report(error: SpecError, errors: list[SpecError] | None) -> None:
    """Raise ``error`` or, where ``errors`` collects every error of a file, add it there."""
    if errors is None:
        raise error
    errors.append(error)


def shipped_specs() -> dict[str, Path]:
    """The specs that ship with the package, by name: ``{"small": .../specs/small.yaml, ...}``."""
    folder = resources.files("mnv3spec").joinpath("specs")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_path(source: str | Path) -> Path:
    """A spec path as given, or a shipped spec by name (``small``, ``small.yaml``, or
    ``specs/small.yaml`` from a folder that has no ``specs/``)."""
    path = Path(source)
    try:
        if path.is_dir():
            message = "is a folder; give a spec file such as specs/small.yaml"
            raise SpecError(message, file=str(path))
        if path.exists():
            return path
    except OSError as e:  # a name too long for the system, a loop of links
        raise SpecError(f"cannot read the file: {e.strerror}", file=str(path)) from None
    shipped = shipped_specs()
    if path.suffix in ("", ".yaml") and str(path.parent) in (".", "specs") and path.stem in shipped:
        return shipped[path.stem]
    raise SpecError(
        f"no such file; give the path of a spec, or a shipped one: {', '.join(sorted(shipped))}",
        file=str(path),
    )


def read_text(path: Path) -> str:
    """The text of a spec file: a regular file of at most ``MAX_SPEC_BYTES``, UTF-8.

    Checked before opening (a FIFO would block, ``/dev/zero`` never ends) and read with a cap."""
    file = str(path)
    try:
        info = os.stat(path)  # links followed: what would be read
        if stat.S_ISREG(info.st_mode):
            if info.st_size > MAX_SPEC_BYTES:
                _not_another_kind(path)
            _check_size(info.st_size, file)
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())  # the file opened, should it have been swapped
                raw = f.read(MAX_SPEC_BYTES + 1) if stat.S_ISREG(info.st_mode) else b""
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=file) from None
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(
            f"is {_kind(info.st_mode)}, not a regular file; give a spec file", file=file
        )
    _check_size(len(raw), file)
    return _decode(raw, file)


def _not_another_kind(path: Path) -> None:
    """A file whose bytes say it is a checkpoint, a program or an image is named as what it is
    and where it goes (never by its name: a checkpoint renamed ``.bin`` is still one). Asked
    only of a file already refused, so a spec is opened once. A bare pickle may be a dataset's
    batch as well as torch's: the reader calls it a binary file."""
    found = KINDS.get(file_kind(path) or "")
    if found is not None and found.name not in ("spec", "torch-save") and found.taken_by:
        raise SpecError(
            f"this is {found.description}, not a YAML spec ({found.taken_by})", file=str(path)
        )


def _kind(mode: int) -> str:
    for test, name in [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISFIFO, "a pipe"),
        (stat.S_ISSOCK, "a socket"),
    ]:
        if test(mode):
            return name
    return "a special file"


def _check_size(size: int, file: str | None = None) -> None:
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"the file is {size:,} bytes or more; a spec is at most {MAX_SPEC_BYTES:,} bytes "
            "(the shipped ones are about 3 KB)",
            file=file,
        )


def _decode(raw: bytes, file: str) -> str:
    wide = _wide_encoding(raw)
    if wide:
        raise SpecError(f"this is {wide} text; save it as UTF-8", file=file)
    if b"\0" in raw[:4096]:
        _not_another_kind(Path(file))
        raise SpecError("this is a binary file (a dataset or weights?), not a YAML spec", file=file)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        _not_another_kind(Path(file))
        raise SpecError("not UTF-8 text, so not a YAML spec", file=file) from None


def _wide_encoding(raw: bytes) -> str | None:
    """ "UTF-16" or "UTF-32" for text in those encodings (a byte-order mark, or mostly-ASCII
    text with NULs between the characters), else None."""
    if raw.startswith((b"\xff\xfe\0\0", b"\0\0\xfe\xff")):
        return "UTF-32"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    sample = raw[:4096]
    if b"\0" not in sample:
        return None
    for name, size, codecs in [
        ("UTF-32", 4, ("utf-32-le", "utf-32-be")),
        ("UTF-16", 2, ("utf-16-le", "utf-16-be")),
    ]:
        for codec in codecs:
            try:
                text = sample[: len(sample) // size * size].decode(codec)
            except UnicodeDecodeError:
                continue
            if text and "\0" not in text and sum(c.isascii() for c in text) >= 0.9 * len(text):
                return name
    return None
