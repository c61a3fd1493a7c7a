"""Edits to a spec: one record for every way a spec is changed, where each came from, and the
``--set`` grammar that reads them from the command line.

``--set layers.bneck3.se=true``, a variant's ``params:``, ``rows:``, ``remove:`` and ``insert:``, a
sweep's ``--grid``, ``Spec.derive`` and the fitting of a spec to its data all become
:class:`Edit` records, applied by :meth:`.draft.Draft.apply` alone, so each mistake has one
message. Each front end only reads its own syntax into edits.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import yaml

from ..errors import SpecError
from ..text import quoted, shown
from .limits import MAX_ROWS
from .read import Marks, Where, field_name, load_scalar


@dataclass(frozen=True)
class Flag:
    """An edit typed as ``--set KEY=VALUE``, or handed to ``load_spec`` and ``Spec.derive`` as a
    keyword (which take the same grammar): errors name it ``set KEY=VALUE``."""

    assignment: str  # KEY=VALUE, cut short, as errors and the marks of overridden values show it
    rows_by_index: ClassVar[bool] = True  # layers.3 or layers.bneck3

    @property
    def label(self) -> str:
        return f"set {self.assignment}"

    def error(self, message: str, at: Where | None = None) -> SpecError:
        """An error at the flag (which has no parts to point into: ``at`` is a file's)."""
        return SpecError(message, field=self.label)


@dataclass(frozen=True)
class Written:
    """An edit written in a file (a variant's): errors point at ``at`` there (its key with
    ``key``), and the value keeps the positions of its parts, relative to it, so that an error
    in the value later points into this file too."""

    marks: Marks
    at: Where
    key: bool = False
    values: dict[Where, yaml.Mark] = field(default_factory=dict)
    keys: dict[Where, yaml.Mark] = field(default_factory=dict)
    key_mark: yaml.Mark | None = None  # the position of the key naming the value
    rows_by_index: ClassVar[bool] = False  # a file names rows by name only

    @property
    def label(self) -> str:
        return field_name(self.at)

    def error(self, message: str, at: Where | None = None) -> SpecError:
        """An error at the edit, or at ``at`` in the same file (a part of its value)."""
        return self.marks.error(message, self.at if at is None else at, key=self.key and at is None)


Origin = Flag | Written


@dataclass(eq=False)  # compared by identity: two rows may be equal and still be two rows
class Placed:
    """A value with the positions of its parts (``()`` is the value itself), relative to it, and
    the ``--set`` assignments that changed them: a row of a spec being edited, or a new row."""

    value: Any
    values: dict[Where, yaml.Mark] = field(default_factory=dict)
    keys: dict[Where, yaml.Mark] = field(default_factory=dict)
    overridden: dict[Where, str] = field(default_factory=dict)

    @property
    def name(self) -> Any:
        return self.value.get("name") if isinstance(self.value, dict) else None


class Change(Enum):
    """Values of an edit that set nothing."""

    DROP = "drop"  # drops the field or parameter (a variant's null)
    REMOVE = "remove"  # removes the row the path names
    FIND = "find"  # names a row that must exist and changes nothing (a variant's empty patch)


DROP, REMOVE, FIND = Change.DROP, Change.REMOVE, Change.FIND


@dataclass(frozen=True)
class Insert:
    """The value of an edit that inserts ``rows`` before (or ``after``) the row its path names;
    ``at``: where the rows stand in their file, for errors about one of them."""

    rows: tuple[Placed, ...]
    after: bool
    at: Where


@dataclass(frozen=True)
class Edit:
    """One change to a spec. ``path`` names what changes:

    - ``(name,)``: a parameter the spec defines (``--set width=0.5``);
    - ``("params", name)``: a parameter, set or added (a variant's ``params:``);
    - ``("layers", row, field)``: a field of a row, named by its ``name`` (a string) or its index;
    - ``("layers", row)`` with ``REMOVE`` or an :class:`Insert`: the table itself (``FIND``:
      the row is only looked up);
    - any longer path: a place in the document (``--set`` takes any dotted key).

    ``value`` is what is set there (``DROP`` drops it); ``origin`` is where the edit came from."""

    path: tuple[Any, ...]
    value: Any
    origin: Origin


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"width=0.5"`` → ``("width", 0.5)``: the value is read as a YAML scalar."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise SpecError(
            f"'{text}' is not KEY=VALUE; for example width=0.5 or layers.12.se=true",
            field="set",
        )
    try:
        parsed = load_scalar(value) if value.strip() else None
    except (yaml.YAMLError, ValueError):
        parsed = value
    if isinstance(parsed, float) and not math.isfinite(parsed):
        raise SpecError(f"'{text}': the value must be a finite number", field="set")
    if parsed is None or isinstance(parsed, (list, dict)):
        raise SpecError(f"'{text}': the value must be a number, true/false or a word", field="set")
    return key.strip(), parsed


def flag(key: str, value: Any) -> Edit:
    """The edit ``--set KEY=VALUE`` makes: a key without a dot is a parameter the spec defines;
    a dotted one a place, its second part a row's index (digits) or ``name`` under ``layers``."""
    origin = _flag_of(key, value)
    parts: list[Any] = key.split(".")
    if len(parts) > 2 and parts[0] == "layers" and re.fullmatch("[0-9]+", parts[1]):
        if len(parts[1]) > 6:  # refused before conversion: Python refuses 4,300 digits
            raise origin.error(
                f"{quoted(parts[1])} is no row's index: a spec has at most {MAX_ROWS} rows"
            )
        parts[1] = int(parts[1])
    return Edit(tuple(parts), value, origin)


def _flag_of(key: str, value: Any) -> Flag:
    return Flag(f"{shown(key)}={json.dumps(value) if isinstance(value, bool) else shown(value)}")


def from_overrides(overrides: Mapping[str, Any]) -> list[Edit]:
    """``load_spec``'s and ``derive``'s keywords (``{"width": 0.5, "layers.12.se": True}``), in
    order, as the edits ``--set`` would make of them."""
    return [flag(key, value) for key, value in overrides.items()]


def from_rows(
    rows: Mapping[Any, Mapping[str, Any]],
    origin: Callable[[Any, str], Origin] | None = None,
) -> list[Edit]:
    """A variant's ``rows:`` (row name → the fields to set; None drops a field) as edits, each
    from ``origin(row, field)``: by default the ``--set layers.ROW.FIELD=VALUE`` it amounts to."""
    out = []
    for row, fields in rows.items():
        for key, value in fields.items():
            where = origin(row, key) if origin else _flag_of(f"layers.{row}.{key}", value)
            value = DROP if value is None else copy.deepcopy(value)  # never shared with the caller
            out.append(Edit(("layers", str(row), key), value, where))
    return out
