"""A row of the spec's table, resolved: ``$parameter`` references replaced by their values, the
values checked against the operator's schema, every field it leaves out set to its default."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import SpecError
from ..ops.registry import with_defaults
from .check import op_validator, schema_error
from .read import Marks, report

REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class Row:
    """One row of the spec's table: ``$parameter`` references replaced by values, and every field
    the operator has that the row leaves out set to its default (``s: 1``, ``nl: none``…).
    ``name`` is the row's ``name`` field (stable when rows are inserted), None if it has none;
    ``file`` the file the row stands in at ``line`` (a variant's base, or the spec's own file)."""

    index: int
    op: str
    fields: dict[str, Any]
    line: int | None
    name: str | None = None
    file: str | None = None


def resolve_row(
    i: int, raw: dict, params: dict, marks: Marks, errors: list[SpecError] | None = None
) -> Row:
    """Row ``i`` of the table, ``raw`` as the document holds it."""
    fields = {}
    for key, value in raw.items():
        if key == "name":
            continue
        ref = REF.match(value) if isinstance(value, str) else None
        if ref and ref.group(1) in params:
            value = params[ref.group(1)]
        elif ref:  # left as written: the schema takes a $name, so nothing else reports it
            known = ", ".join(map(str, params))  # collecting, a key may be a number
            message = f"refers to ${ref.group(1)}, but params defines only: {known}"
            report(marks.error(message, ("layers", i, key)), errors)
        fields[key] = value
    # Values that came from a parameter are checked against the same schema as literals.
    for error in op_validator(raw["op"]).iter_errors(fields):
        err = schema_error(error, marks, ("layers", i))
        name = error.absolute_path[0] if error.absolute_path else ""
        ref = REF.match(raw[name]) if isinstance(raw.get(name), str) else None
        if ref:
            origin = marks.overridden.get(("params", ref.group(1)))
            source = f"{raw[name]}, overridden with {origin}" if origin else raw[name]
            err = marks.error(f"{err.message} (the value comes from {source})", ("layers", i, name))
        report(err, errors)
    mark = marks.values.get(("layers", i))
    line = mark.line + 1 if mark else None
    file = marks.file_of(("layers", i))
    return Row(i, raw["op"], with_defaults(raw["op"], fields), line, raw.get("name"), file)
