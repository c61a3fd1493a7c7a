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
variant reads like a diff of the paper's table. A base may itself be a variant, up to
``MAX_BASES`` deep. Every value of the result keeps its place in the file it came from: an
error names that file, line and column, and a base says whose base it is.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from .limits import MAX_BASES
from .read import Marks, Where, read_text, read_yaml, shipped_specs

KEYS = ("base", "name", "description", "source", "params", "rows", "remove", "insert")
Check = Callable[[Any, Marks], None]  # validates a flat document (a base), raising SpecError


class ChainMarks(Marks):
    """Marks of a document merged from several files: every position keeps the file it stands in
    (its ``yaml.Mark.name``), and an error in a base says whose base it is (``notes``)."""

    def __init__(self, file: str, notes: dict[str, str]) -> None:
        super().__init__(file)
        self.notes = notes  # file → "" for the variant itself, " (b.yaml is the base of a.yaml)"

    def copy(self) -> ChainMarks:
        other = ChainMarks(self.file, self.notes)
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


def read_spec(path: Path, check: Check) -> tuple[Any, Marks]:
    """The document of the spec file ``path`` with its marks: as written, or, for a variant, its
    chain of bases resolved into one flat document (each base checked with ``check`` first)."""
    doc, marks = read_yaml(read_text(path), str(path))
    if not is_variant(doc):
        return doc, marks
    return _flatten(doc, _chained(marks, ()), path, (), check)


def _note(file: str, chain: tuple[Path, ...]) -> str:
    return f" ({file} is the base of {', the base of '.join(map(str, chain))})" if chain else ""


def _chained(marks: Marks, chain: tuple[Path, ...]) -> ChainMarks:
    """One file's marks, each tagged with the file; ``chain``: whose base it is, nearest first."""
    file = marks.file
    out = ChainMarks(file, {file: _note(file, chain)})
    out.values = {w: _tagged(m, file) for w, m in marks.values.items()}
    out.keys = {w: _tagged(m, file) for w, m in marks.keys.items()}
    return out


def _tagged(mark: yaml.Mark, file: str) -> yaml.Mark:
    return yaml.Mark(file, mark.index, mark.line, mark.column, None, None)


def _read_base(path: Path, chain: tuple[Path, ...], check: Check) -> tuple[dict, ChainMarks]:
    try:  # the bounded reader: a FIFO, a device or a huge file is refused before reading
        doc, plain = read_yaml(read_text(path), str(path))
    except SpecError as e:
        e.message += _note(str(path), chain)
        raise
    marks = _chained(plain, chain)
    if is_variant(doc):
        doc, marks = _flatten(doc, marks, path, chain, check)
    check(doc, marks)  # a base that is itself invalid is refused where it is wrong
    return doc, marks


@dataclass
class _Row:
    """A row of the result with the positions of its values (``()`` is the row itself)."""

    fields: dict
    values: dict[Where, yaml.Mark]
    keys: dict[Where, yaml.Mark]

    @property
    def name(self) -> Any:
        return self.fields.get("name")


def _under(marks: Marks, where: Where) -> tuple[dict, dict]:
    """The positions below ``where``, keyed by the rest of their path."""
    n = len(where)
    values = {w[n:]: m for w, m in marks.values.items() if w[:n] == where}
    keys = {w[n:]: m for w, m in marks.keys.items() if w[:n] == where and len(w) > n}
    return values, keys


def _flatten(
    doc: dict, marks: ChainMarks, path: Path, chain: tuple[Path, ...], check: Check
) -> tuple[dict, ChainMarks]:
    _check_keys(doc, marks)
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
    base, base_marks = _read_base(base_path, (path, *chain), check)
    label = f"the base {doc['base']}"

    out: dict[str, Any] = {}
    merged = ChainMarks(marks.file, {**base_marks.notes, **marks.notes})
    if () in marks.values:
        merged.values[()] = marks.values[()]
    for key in ("name", "description", "source"):
        source, owner = (doc, marks) if key in doc else (base, base_marks)
        if key in source:
            out[key] = source[key]
            _copy(owner, (key,), merged, (key,))
    out["params"] = _params(base, base_marks, doc, marks, merged)
    rows = [_Row(r, *_under(base_marks, ("layers", i))) for i, r in enumerate(base["layers"])]
    rows = _edit_rows(rows, doc, marks, label)
    rows = _insert_rows(rows, doc, marks)
    out["layers"] = [r.fields for r in rows]
    if ("layers",) in base_marks.values:
        merged.values[("layers",)] = base_marks.values[("layers",)]
    for i, row in enumerate(rows):
        merged.values.update({("layers", i, *w): m for w, m in row.values.items()})
        merged.keys.update({("layers", i, *w): m for w, m in row.keys.items()})
    return out, merged


def _copy(src: Marks, where: Where, dst: Marks, to: Where) -> None:
    values, keys = _under(src, where)
    dst.values.update({(*to, *w): m for w, m in values.items()})
    dst.keys.update({(*to, *w): m for w, m in keys.items()})
    if where in src.keys:
        dst.keys[to] = src.keys[where]


def _check_keys(doc: dict, marks: Marks) -> None:
    for key in doc:
        if key not in KEYS:
            hint = " (a variant edits its base's rows: rows, remove, insert)" * (key == "layers")
            raise marks.error(
                f"unknown key '{key}' in a variant; allowed: {', '.join(KEYS)}{hint}",
                (key,),
                key=True,
            )
    if "name" not in doc:
        raise marks.error(
            "a variant needs a name of its own (name: small_no_se), so that its checkpoints and "
            "tables are not taken for its base's",
            ("base",),
            key=True,
        )
    for key, kind, example in [
        ("params", dict, "a mapping of parameters to set (width: 0.75)"),
        ("rows", dict, "a mapping of row names to the fields to set (bneck1: {se: false})"),
        ("remove", list, "a list of row names ([bneck11])"),
        ("insert", list, "a list of insertions (- after: bneck3, rows: [...])"),
    ]:
        if key in doc and not isinstance(doc[key], kind):
            raise marks.error(f"found {_kind(doc[key])}; allowed: {example}", (key,))


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else f"'{str(value)[:60]}'"


def _base_path(value: Any, path: Path, marks: Marks) -> Path:
    """``base:`` as a path relative to the variant's folder, else a shipped spec's name."""
    shipped = shipped_specs()
    allowed = f"a path relative to this file, or a shipped spec: {', '.join(sorted(shipped))}"
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise marks.error(f"found {_kind(value)}; allowed: {allowed}", ("base",))
    candidate = path.parent / value
    try:
        if os.path.lexists(candidate):  # read_text refuses what is not a regular file
            return candidate
    except (OSError, ValueError):
        pass
    name = value.removesuffix(".yaml")
    if "/" not in value and name in shipped:
        return shipped[name]
    raise marks.error(f"no base '{value}': no file {candidate}; allowed: {allowed}", ("base",))


def _params(base: dict, base_marks: Marks, doc: dict, marks: Marks, merged: Marks) -> dict:
    params = dict(base["params"])
    _copy(base_marks, ("params",), merged, ("params",))
    for key, value in doc.get("params", {}).items():
        if value is None:  # JSON Merge Patch: null drops the key
            params.pop(key, None)
        else:
            params[key] = value
            _copy(marks, ("params", key), merged, ("params", key))
    return params


def _names(rows: list[_Row]) -> str:
    return (
        ", ".join(str(r.name) for r in rows if isinstance(r.name, str)) or "none (no row is named)"
    )


def _edit_rows(rows: list[_Row], doc: dict, marks: Marks, label: str) -> list[_Row]:
    """``rows:`` (fields set) and ``remove:``, both naming rows of the base."""
    index = {r.name: i for i, r in enumerate(rows) if isinstance(r.name, str)}
    for name, patch in doc.get("rows", {}).items():
        where = ("rows", name)
        if name not in index:
            raise marks.error(
                f"edits the row '{name}', but {label} has no row of that name; its rows: "
                f"{_names(rows)}",
                where,
                key=True,
            )
        if not isinstance(patch, dict):
            raise marks.error(
                f"found {_kind(patch)}; allowed: a mapping of fields to set ({{se: false}}; null "
                "drops a field)",
                where,
            )
        row = rows[index[name]]
        for key, value in patch.items():
            for table in (row.values, row.keys):
                for w in [w for w in table if w[:1] == (key,)]:
                    del table[w]
            if value is None:
                row.fields.pop(key, None)
                continue
            row.fields[key] = copy.deepcopy(value)
            values, keys = _under(marks, (*where, key))
            row.values.update({(key, *w): m for w, m in values.items()})
            row.keys.update({(key, *w): m for w, m in keys.items()})
            if (*where, key) in marks.keys:
                row.keys[(key,)] = marks.keys[(*where, key)]
    removed = set()
    for n, name in enumerate(doc.get("remove", [])):
        if not isinstance(name, str) or name not in index:
            raise marks.error(
                f"removes the row '{name}', but {label} has no row of that name; its rows: "
                f"{_names(rows)}",
                ("remove", n),
            )
        if name in doc.get("rows", {}):
            raise marks.error(
                f"'{name}' is both edited (under rows:) and removed; keep one", ("remove", n)
            )
        removed.add(index[name])
    return [r for i, r in enumerate(rows) if i not in removed]


def _insert_rows(rows: list[_Row], doc: dict, marks: Marks) -> list[_Row]:
    """``insert:``: each item's rows go before or after a named row of the result so far."""
    for n, item in enumerate(doc.get("insert", [])):
        where = ("insert", n)
        allowed = "a mapping with before: or after: (a row's name) and rows: (a list of rows)"
        if not isinstance(item, dict):
            raise marks.error(f"found {_kind(item)}; allowed: {allowed}", where)
        for key in item:
            if key not in ("before", "after", "rows"):
                raise marks.error(
                    f"unknown key '{key}'; allowed: {allowed}", (*where, key), key=True
                )
        sides = [k for k in ("before", "after") if k in item]
        if len(sides) != 1 or "rows" not in item:
            raise marks.error(
                f"give one of before: and after:, and rows:; allowed: {allowed}", where
            )
        side, anchor = sides[0], item[sides[0]]
        names = [r.name for r in rows]
        if anchor not in names or not isinstance(anchor, str):
            removed = " (removed above by remove:)" if anchor in doc.get("remove", []) else ""
            raise marks.error(
                f"no row named '{anchor}' to insert {side}{removed}; the rows are: {_names(rows)}",
                (*where, side),
            )
        new = item["rows"]
        if not isinstance(new, list) or not new or not all(isinstance(r, dict) for r in new):
            raise marks.error(
                f"found {_kind(new)}; allowed: a non-empty list of rows, each a mapping with an op",
                (*where, "rows"),
            )
        for j, row in enumerate(new):
            if isinstance(row.get("name"), str) and row["name"] in names:
                raise marks.error(
                    f"the row name '{row['name']}' is already used by a row of the spec; names "
                    "are unique within a spec",
                    (*where, "rows", j, "name"),
                )
            names.append(row.get("name"))
        at = names.index(anchor) + (side == "after")
        inserted = [_Row(r, *_under(marks, (*where, "rows", j))) for j, r in enumerate(new)]
        rows = [*rows[:at], *inserted, *rows[at:]]
    return rows
