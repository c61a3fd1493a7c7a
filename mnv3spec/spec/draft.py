"""A spec document being edited, and the one implementation of :class:`~.edits.Edit`: every front
end's edits are made here, so each mistake (no such row, no such parameter, a place that is not
a mapping) has one message, said at the flag or the file position the edit came from.

The rows are held apart, each with the positions of its values, so that a row is set, removed or
inserted without renumbering the positions of every other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..text import quoted
from .edits import DROP, FIND, REMOVE, Edit, Insert, Origin, Placed, Written
from .limits import MAX_ROWS
from .read import Marks, Where, field_name, report

Errors = list[SpecError] | None  # where every error is collected (validate), or None: raise
_TABLES = ("values", "keys", "overridden")  # what Marks and Placed both hold, by position


@dataclass
class Draft:
    """``doc`` being edited: ``rows``, its ``layers`` held apart (None where ``layers`` is not a
    list, and the document is edited as any value), and ``marks``, the positions outside them.
    ``subject``: what the edits change, as messages name it ("the spec", "the base small")."""

    doc: Any
    marks: Marks
    rows: list[Placed] | None
    subject: str = "the spec"
    removed: dict[str, str] = field(default_factory=dict)  # row name → the edit removing it

    @classmethod
    def of(cls, doc: Any, marks: Marks, subject: str = "the spec") -> Draft:
        """The draft of ``doc`` (changed in place as edits are made) and its ``marks`` (kept)."""
        layers = doc.get("layers") if isinstance(doc, dict) else None
        if not isinstance(layers, list):
            return cls(doc, marks, None, subject)
        rows = [Placed(r) for r in layers]
        outside = marks.copy()
        for table in _TABLES:
            kept: dict = {}
            for where, mark in getattr(marks, table).items():
                i = where[1] if len(where) > 1 and where[0] == "layers" else None
                if isinstance(i, int) and 0 <= i < len(rows):
                    getattr(rows[i], table)[where[2:]] = mark
                else:
                    kept[where] = mark
            setattr(outside, table, kept)
        return cls(doc, outside, rows, subject)

    def document(self) -> tuple[Any, Marks]:
        """The edited document and the position of each of its values."""
        if self.rows is None:
            return self.doc, self.marks
        self.doc["layers"] = [row.value for row in self.rows]
        out = self.marks.copy()
        for table in _TABLES:
            merged = dict(getattr(self.marks, table))
            for i, row in enumerate(self.rows):
                merged.update({("layers", i, *w): m for w, m in getattr(row, table).items()})
            setattr(out, table, merged)
        return self.doc, out

    def apply(self, edits: Sequence[Edit], errors: Errors = None) -> None:
        """Make ``edits`` in order. The rows they name are looked up first, as the draft is
        before any of them (a variant's ``rows:`` and ``remove:`` both name rows of its base);
        an edit that cannot be made is reported (raised, or added to ``errors``) and skipped."""
        found = []
        for edit in edits:
            try:
                found.append((edit, self._row(edit)))
            except SpecError as e:
                report(e, errors)
        for edit, row in found:
            try:
                self._make(edit, row, errors)
            except SpecError as e:
                report(e, errors)

    def get(self, edit: Edit) -> Any:
        """The value now at the place ``edit`` names, found as making it would find it (and
        refused in the same words where there is none)."""
        start, _, path, prefix = self._place(edit, self._row(edit))
        return _walk(start, path, prefix, edit.origin, self.subject)

    def _row(self, edit: Edit) -> Placed | None:
        """The row ``edit`` names, for an edit of a row's field or of the table; else None."""
        path, value = edit.path, edit.value
        table = value is REMOVE or value is FIND or isinstance(value, Insert)
        if self.rows is None or path[0] != "layers" or (len(path) < 3 and not table):
            return None
        if isinstance(path[1], int):
            if path[1] < len(self.rows):
                return self.rows[path[1]]
            raise edit.origin.error(f"{self.subject} has no '{field_name(path[:2])}'")
        for row in self.rows:
            if row.name == path[1]:
                return row
        raise edit.origin.error(self._no_row(path[1], edit.origin))

    def _no_row(self, name: str, origin: Origin) -> str:
        names = ", ".join(r.name for r in self.rows or () if isinstance(r.name, str))
        removed = f" (removed above by {self.removed[name]})" if name in self.removed else ""
        if origin.rows_by_index:
            unnamed = "none (address rows by index)"
            listing = f"are 0..{len(self.rows or ()) - 1}, named: {names or unnamed}"
        else:
            listing = f"are named: {names}" if names else "have no names"
        return f"{self.subject} has no row named {quoted(name)}{removed}; its rows {listing}"

    def _make(self, edit: Edit, row: Placed | None, errors: Errors) -> None:
        if edit.value is FIND:
            return
        if edit.value is REMOVE:
            self.rows = [r for r in self.rows or () if r is not row]
            if isinstance(row.name, str):
                self.removed[row.name] = edit.origin.label
        elif isinstance(edit.value, Insert):
            self._insert(edit, edit.value, row, errors)
        else:
            _set(*self._place(edit, row), edit, self.subject)

    def _place(self, edit: Edit, row: Placed | None) -> tuple[Any, Marks | Placed, tuple, Where]:
        """Where ``edit`` changes the document: the value its path starts from, what holds the
        positions below that value, the path from it, and where the value stands."""
        if row is not None:
            return row.value, row, edit.path[2:], ("layers", self.rows.index(row))
        if len(edit.path) == 1:  # a parameter the spec defines
            params = self.doc.get("params")
            if not isinstance(params, dict) or edit.path[0] not in params:
                known = ", ".join(map(str, params)) if isinstance(params, dict) else "none"
                message = f"unknown parameter {quoted(str(edit.path[0]))}"
                raise edit.origin.error(f"{message}; {self.subject} defines: {known}")
            return self.doc, self.marks, ("params", *edit.path), ()
        return self.doc, self.marks, edit.path, ()

    def _insert(self, edit: Edit, new: Insert, anchor: Placed, errors: Errors) -> None:
        rows = self.rows or []
        if len(rows) + len(new.rows) > MAX_ROWS:  # refused before the work
            message = f"this insertion makes {len(rows) + len(new.rows):,} rows; a spec has at most"
            raise edit.origin.error(f"{message} {MAX_ROWS}", new.at)
        names = {r.name for r in rows if isinstance(r.name, str)}
        kept = []
        for j, row in enumerate(new.rows):
            if isinstance(row.name, str) and row.name in names:
                message = (
                    f"the row name {quoted(row.name)} is already used by a row of the spec; "
                    "names are unique within a spec"
                )
                report(edit.origin.error(message, (*new.at, j, "name")), errors)
                continue
            if isinstance(row.name, str):  # the schema reports a name that is not a string
                names.add(row.name)
            kept.append(row)
        at = rows.index(anchor) + new.after
        self.rows = [*rows[:at], *kept, *rows[at:]]


def _walk(start: Any, path: tuple, prefix: Where, origin: Origin, subject: str) -> Any:
    """The value at ``path`` below ``start`` (which stands at ``prefix``)."""
    target = start
    for n, part in enumerate(path):
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            where = field_name((*prefix, *path[: n + 1]))
            raise origin.error(f"{subject} has no '{where}'") from None
    return target


def _set(
    start: Any, holder: Marks | Placed, path: tuple, prefix: Where, edit: Edit, subject: str
) -> None:
    """Make ``edit`` at ``path`` below ``start``; ``holder`` keeps the positions below ``start``:
    a written edit's own, or the assignment of a ``--set``."""
    container = _walk(start, path[:-1], prefix, edit.origin, subject)
    if not isinstance(container, dict):
        raise edit.origin.error(f"'{field_name((*prefix, *path[:-1]))}' is not a mapping")
    if edit.value is DROP:
        container.pop(path[-1], None)
    else:
        container[path[-1]] = edit.value
    origin = edit.origin
    if not isinstance(origin, Written):
        holder.overridden[path] = origin.assignment
        return
    for table in _TABLES:  # what stood there before is gone
        positions = getattr(holder, table)
        for where in [w for w in positions if w[: len(path)] == path]:
            del positions[where]
    if edit.value is not DROP:
        holder.values.update({(*path, *w): m for w, m in origin.values.items()})
        holder.keys.update({(*path, *w): m for w, m in origin.keys.items()})
        if origin.key_mark is not None:
            holder.keys[path] = origin.key_mark
