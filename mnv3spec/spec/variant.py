"""A variant: a spec that names its ``base`` and states only what changes, resolved into the flat
document that :func:`~.load.load_spec` validates.

    base: small                  # a path relative to this file if there is one, else a shipped spec
    name: small_no_se            # required: a variant is another network
    params: {width: 0.75}        # set over the base's parameters
    rows:                        # fields set over the named rows; null drops a field
      bneck1: {se: false}
    remove: [bneck11]            # rows dropped, by name
    insert:                      # new rows next to a named row (one inserted above counts)
      - after: bneck3
        rows:
          - {name: bneck3b, op: bneck, k: 3, exp: 72, out: 24, se: false, nl: RE, s: 1}

Edits apply in that order (fields, removals, insertions), each naming rows of the base, so a
variant reads like a diff of the paper's table. This module only reads them into
:class:`~.edits.Edit` records; :class:`~.draft.Draft` makes them, as it makes ``--set``'s, so a
mistake (a row that is not there) has one message wherever it is written. A base may itself be
a variant, up to ``MAX_BASES`` deep. Every value of the result keeps its place in the file it
came from: an error names that file, line and column, and a base says whose base it is.

A spec may come from someone else (a pull request in CI), so ``base:`` is resolved only to a
shipped spec or a file in the folder of the spec that names it or below (or in a folder the
user trusts: :func:`trusted_bases`, ``--allow-base``), refused before anything is read; and an
error in a base says where and what kind of value, never the base's text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from ..text import kind_of, printable, quoted
from .draft import Draft, Errors
from .edits import DROP, FIND, REMOVE, Edit, Insert, Placed, Written, from_rows
from .limits import MAX_BASES, MAX_FIELDS, MAX_PARAMS, MAX_ROWS
from .read import Marks, Where, read_text, read_yaml, report, shipped_specs

KEYS = ("base", "name", "description", "source", "params", "rows", "remove", "insert")
Check = Callable[[Any, Marks], None]  # validates a flat document (a base), raising SpecError

TRUSTED = "a folder trusted for bases"  # the CLI names its flag after these words
# Folders beside a variant's own from which its base may come: the user's, never the spec's word.
# Process-wide, not a ContextVar: a sweep hands them to its workers from threads of its own.
_TRUSTED: list[tuple[str, ...]] = [()]


@contextlib.contextmanager
def trusted_bases(folders: Iterable[str | Path]) -> Iterator[None]:
    """Within the block, a variant's ``base:`` may also be a file in ``folders`` or below (the
    CLI's ``--allow-base DIR``); links are resolved, so a link cannot lead out of them."""
    before = _TRUSTED[0]
    _TRUSTED[0] = tuple(os.path.realpath(f) for f in folders)
    try:
        yield
    finally:
        _TRUSTED[0] = before


def trusted_folders() -> tuple[str, ...]:
    """The folders :func:`trusted_bases` trusts now (real paths)."""
    return _TRUSTED[0]


class ChainMarks(Marks):
    """Marks of a document merged from several files: every position keeps the file it stands in
    (its ``yaml.Mark.name``), and an error in a base says whose base it is (``notes``)."""

    def __init__(self, file: str, notes: dict[str, str], private: bool = False) -> None:
        super().__init__(file, private)
        self.notes = notes  # file → "" for the variant itself, " (b.yaml is the base of a.yaml)"

    def copy(self) -> ChainMarks:
        other = ChainMarks(self.file, self.notes, self.private)
        other.values, other.keys, other.nodes = self.values, self.keys, self.nodes
        other.overridden = dict(self.overridden)
        return other

    def file_of(self, where: Where) -> str:
        mark = self.values.get(where)
        return mark.name if mark is not None else self.file

    def at(self, message: str, mark: yaml.Mark | None, name: str | None = None) -> SpecError:
        file = mark.name if mark is not None else self.file
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        note = self.notes.get(file, "")
        return SpecError(message + note, file=file, line=line, column=column, field=name)


def is_variant(doc: Any) -> bool:
    return isinstance(doc, dict) and "base" in doc


def read_spec(path: Path, check: Check, errors: Errors = None) -> tuple[Any, Marks]:
    """The document of the spec file ``path`` with its marks: as written, or, for a variant, its
    chain of bases resolved into one flat document (each base checked with ``check`` first).
    With ``errors``, each wrong edit of the variant is added there and left out of the result;
    a base that cannot be had still raises, since nothing else can be checked without it."""
    doc, marks = read_yaml(read_text(path), str(path))
    if not is_variant(doc):
        return doc, marks
    return _flatten(doc, _chained(marks, ()), path, (), check, errors)


def _note(file: str, chain: tuple[Path, ...]) -> str:
    return f" ({file} is the base of {', the base of '.join(map(str, chain))})" if chain else ""


def _chained(marks: Marks, chain: tuple[Path, ...]) -> ChainMarks:
    """One file's marks, each tagged with the file; ``chain``: whose base it is, nearest first."""
    file = marks.file
    out = ChainMarks(file, {file: _note(file, chain)}, private=bool(chain))
    out.values = {w: _tagged(m, file) for w, m in marks.values.items()}
    out.keys = {w: _tagged(m, file) for w, m in marks.keys.items()}
    return out


def _tagged(mark: yaml.Mark, file: str) -> yaml.Mark:
    return yaml.Mark(file, mark.index, mark.line, mark.column, None, None)


def _read_base(path: Path, chain: tuple[Path, ...], check: Check) -> tuple[dict, ChainMarks]:
    try:  # the bounded reader: a FIFO, a device or a huge file is refused before reading
        doc, plain = read_yaml(read_text(path), str(path), private=True)
    except SpecError as e:
        e.message += _note(str(path), chain)
        raise
    marks = _chained(plain, chain)
    if is_variant(doc):
        doc, marks = _flatten(doc, marks, path, chain, check, None)
    check(doc, marks)  # a base that is itself invalid is refused where it is wrong
    return doc, marks


def _under(marks: Marks, where: Where) -> tuple[dict, dict]:
    """The positions below ``where``, keyed by the rest of their path."""
    n = len(where)
    values = {w[n:]: m for w, m in marks.values.items() if w[:n] == where}
    keys = {w[n:]: m for w, m in marks.keys.items() if w[:n] == where and len(w) > n}
    return values, keys


def _grouped(marks: Marks, n: int) -> dict[Where, tuple[dict, dict]]:
    """:func:`_under` for every position ``n`` deep at once, in one pass over the marks (one
    call per row would make a variant of many rows quadratic)."""
    out: dict[Where, tuple[dict, dict]] = {}
    for table, index in ((marks.values, 0), (marks.keys, 1)):
        for w, m in table.items():
            if len(w) >= n + index:
                out.setdefault(w[:n], ({}, {}))[index][w[n:]] = m
    return out


def _flatten(
    doc: dict, marks: ChainMarks, path: Path, chain: tuple[Path, ...], check: Check, errors: Errors
) -> tuple[dict, ChainMarks]:
    doc = _check_keys(doc, marks, errors)
    if len(chain) >= MAX_BASES:
        raise marks.error(
            f"a chain of more than {MAX_BASES} bases; write out the resolved spec of a variant "
            "nearer the end of the chain",
            ("base",),
        )
    base_path = _base_path(doc["base"], path, marks)
    named = (path, *chain)  # this file and those it is the base of
    if os.path.realpath(base_path) in {os.path.realpath(p) for p in named}:
        files = " → ".join(map(str, [*reversed(named), base_path]))
        raise marks.error(f"the chain of bases loops: {files}; a base cannot be its own", ("base",))
    base, base_marks = _read_base(base_path, named, check)
    subject = f"the base {printable(doc['base'])}"
    draft = Draft.of(*_merged_head(doc, marks, base, base_marks), subject)
    changes = [*_param_edits(doc, marks), *_row_edits(doc, marks, errors)]
    draft.apply([*changes, *_removals(doc, marks, errors)], errors)
    for insertion in _insertions(doc, marks, errors):  # each names a row of the result so far
        draft.apply([insertion], errors)
    return draft.document()


def _merged_head(
    doc: dict, marks: ChainMarks, base: dict, base_marks: ChainMarks
) -> tuple[dict, ChainMarks]:
    """The document the variant's edits start from: its own name, description and source where
    it gives them, else its base's; the base's params and rows; the positions of their values."""
    out: dict[str, Any] = {}
    merged = ChainMarks(marks.file, {**base_marks.notes, **marks.notes})
    if () in marks.values:
        merged.values[()] = marks.values[()]
    for key in ("name", "description", "source"):
        source, owner = (doc, marks) if key in doc else (base, base_marks)
        if key in source:
            out[key] = source[key]
            _copy(owner, (key,), merged, (key,))
    out["params"] = dict(base["params"])
    _copy(base_marks, ("params",), merged, ("params",))
    out["layers"] = base["layers"]
    _copy(base_marks, ("layers",), merged, ("layers",), key=False)
    return out, merged


def _copy(src: Marks, where: Where, dst: Marks, to: Where, key: bool = True) -> None:
    values, keys = _under(src, where)
    dst.values.update({(*to, *w): m for w, m in values.items()})
    dst.keys.update({(*to, *w): m for w, m in keys.items()})
    if key and where in src.keys:
        dst.keys[to] = src.keys[where]


_SHAPES = [  # key, type, what it holds, its most entries
    ("params", dict, "a mapping of parameters to set (width: 0.75)", MAX_PARAMS),
    ("rows", dict, "a mapping of row names to the fields to set (bneck1: {se: false})", MAX_ROWS),
    ("remove", list, "a list of row names ([bneck11])", MAX_ROWS),
    ("insert", list, "a list of insertions (- after: bneck3, rows: [...])", MAX_ROWS),
]


def _check_keys(doc: dict, marks: Marks, errors: Errors) -> dict:
    """``doc`` with what is wrong in its keys reported and left out; its sizes bounded (an edit
    list past a spec's bound is refused before any of it is applied)."""
    kept = dict(doc)
    for key in doc:
        if key not in KEYS:
            hint = " (a variant edits its base's rows: rows, remove, insert)" * (key == "layers")
            message = f"unknown key {quoted(str(key))} in a variant; allowed: {', '.join(KEYS)}"
            report(marks.error(message + hint, (key,), key=True), errors)
            del kept[key]
    if "name" not in doc:
        message = (
            "a variant needs a name of its own (name: small_no_se), so that its checkpoints and "
            "tables are not taken for its base's"
        )
        report(marks.error(message, ("base",), key=True), errors)
    for key, kind, example, most in _SHAPES:
        if key in doc and not isinstance(doc[key], kind):
            report(marks.error(f"found {kind_of(doc[key])}; allowed: {example}", (key,)), errors)
            del kept[key]
        elif len(kept.get(key, ())) > most:
            message = f"{len(doc[key]):,} entries; allowed: {example}, at most {most}"
            raise marks.error(message, (key,))
    return kept


def _base_path(value: Any, path: Path, marks: Marks) -> Path:
    """``base:`` as a path relative to the variant's folder, else a shipped spec's name; a path
    that leads out of that folder (and the trusted ones) is refused before it is looked at."""
    shipped = shipped_specs()
    allowed = (
        f"a shipped spec ({', '.join(sorted(shipped))}), or a file in this spec's folder or "
        f"below, or in {TRUSTED}"
    )
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise marks.error(f"found {kind_of(value)}; allowed: {allowed}", ("base",))
    candidate = path.parent / value
    roots = (os.path.realpath(path.parent), *_TRUSTED[0])
    real = os.path.realpath(candidate)
    if not any(os.path.commonpath([real, root]) == root for root in roots):
        raise marks.error(
            f"the base {quoted(value)} lies outside the folder of this spec "
            f"({printable(str(path.parent))}); a base is never read from elsewhere, since a "
            f"spec may come from someone else; allowed: {allowed}",
            ("base",),
        )
    if os.path.lexists(candidate):  # read_text refuses what is not a regular file
        return candidate
    name = value.removesuffix(".yaml")
    if "/" not in value and name in shipped:
        return shipped[name]
    raise marks.error(f"no base {quoted(value)}: no such file; allowed: {allowed}", ("base",))


def _written(
    marks: Marks, where: Where, positions: dict, at: Where | None = None, key: bool = False
) -> Written:
    """The origin of the edit whose value stands at ``where``: errors at ``at`` (its key with
    ``key``), else at the value; ``positions``: :func:`_grouped` at the depth of ``where``."""
    values, keys = positions.get(where, ({}, {}))
    return Written(marks, where if at is None else at, key, values, keys, marks.keys.get(where))


def _param_edits(doc: dict, marks: Marks) -> list[Edit]:
    """``params:``, each set over the base's (or added; null drops one)."""
    positions = _grouped(marks, 2)
    return [
        Edit(("params", k), DROP if v is None else v, _written(marks, ("params", k), positions))
        for k, v in doc.get("params", {}).items()
    ]


def _row_edits(doc: dict, marks: Marks, errors: Errors) -> list[Edit]:
    """``rows:``, fields set over rows of the base named by their ``name`` (null drops one)."""
    positions = _grouped(marks, 3)
    edits = []
    for name, patch in doc.get("rows", {}).items():
        where = ("rows", name)
        if not isinstance(patch, dict) or len(patch) > MAX_FIELDS:
            found = f"a mapping of {len(patch):,} fields" if isinstance(patch, dict) else None
            message = (
                f"found {found or kind_of(patch)}; allowed: a mapping of at most {MAX_FIELDS} "
                "fields to set ({se: false}; null drops a field)"
            )
            report(marks.error(message, where), errors)
            continue
        if not patch:  # sets nothing, but names a row the base must have
            edits.append(Edit(("layers", name), FIND, Written(marks, where, key=True)))
        edits += from_rows(  # an error names the row where the variant names it
            {name: patch}, lambda _, k, at=where: _written(marks, (*at, k), positions, at, True)
        )
    return edits


def _removals(doc: dict, marks: Marks, errors: Errors) -> list[Edit]:
    """``remove:``, rows of the base dropped by their ``name``."""
    edits = []
    for n, name in enumerate(doc.get("remove", [])):
        where = ("remove", n)
        if not isinstance(name, str):
            message = f"found {kind_of(name)}; allowed: the name of a row of the base"
            report(marks.error(message, where), errors)
        elif name in doc.get("rows", {}):
            message = f"{quoted(name)} is both edited (under rows:) and removed; keep one"
            report(marks.error(message, where), errors)
        else:
            edits.append(Edit(("layers", name), REMOVE, Written(marks, where)))
    return edits


_INSERT = "a mapping with before: or after: (a row's name) and rows: (a list of rows)"


def _insertions(doc: dict, marks: Marks, errors: Errors) -> list[Edit]:
    """``insert:``, new rows before or after a named row of the result so far."""
    positions = _grouped(marks, 4)
    edits = []
    for n, item in enumerate(doc.get("insert", [])):
        where = ("insert", n)
        try:
            side = _insertion(item, marks, where)
        except SpecError as e:
            report(e, errors)
            continue
        rows = tuple(
            Placed(row, *positions.get((*where, "rows", j), ({}, {})))
            for j, row in enumerate(item["rows"])
        )
        new = Insert(rows, side == "after", (*where, "rows"))
        edits.append(Edit(("layers", item[side]), new, Written(marks, (*where, side))))
    return edits


def _insertion(item: Any, marks: Marks, where: Where) -> str:
    """The side (before or after) of a well-formed insertion; a SpecError at its place when it
    is not one."""
    if not isinstance(item, dict):
        raise marks.error(f"found {kind_of(item)}; allowed: {_INSERT}", where)
    for key in item:
        if key not in ("before", "after", "rows"):
            message = f"unknown key {quoted(str(key))}; allowed: {_INSERT}"
            raise marks.error(message, (*where, key), key=True)
    sides = [k for k in ("before", "after") if k in item]
    if len(sides) != 1 or "rows" not in item:
        raise marks.error(f"give one of before: and after:, and rows:; allowed: {_INSERT}", where)
    if not isinstance(item[sides[0]], str):
        found = kind_of(item[sides[0]])
        raise marks.error(f"found {found}; allowed: the name of a row", (*where, sides[0]))
    new = item["rows"]
    if not isinstance(new, list) or not new or not all(isinstance(r, dict) for r in new):
        raise marks.error(
            f"found {kind_of(new)}; allowed: a non-empty list of rows, each a mapping with an op",
            (*where, "rows"),
        )
    return sides[0]
