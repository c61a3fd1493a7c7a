"""Two compiled specs side by side, row by row: which rows differ, how, and what it costs.

Rows are aligned as ``diff`` aligns lines (``difflib.SequenceMatcher``): by their names when every
row of both specs has one, else by what they compile to less their input channels. So one inserted
row shows as one row only in B, a removed row as one only in A, and only rows that truly differ
as changed; rows in a replaced stretch (say every row, after a width change) pair in order. Rows
are compared on what they compile to — operator, kernel, channels, expansion, SE, NL, BN, stride,
repeats — so ``exp: x3`` and ``exp: 72`` are the same row when both give 72 channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec.edits import parse_assignment
from ..spec.load import load_spec
from ..text import text_table
from .builder import SpecNet, build
from .summary import Summary, describe, summarize


@dataclass(frozen=True)
class Side:
    """One row of one of the two networks: what it compiles to and what it costs."""

    features: dict[str, Any]
    params: int
    macs: int


@dataclass(frozen=True)
class RowDiff:
    """Row ``index_a`` of A aligned with row ``index_b`` of B (None: that network has no such
    row); ``name`` is the row's name (B's, else A's), "" for an unnamed row."""

    index_a: int | None
    index_b: int | None
    name: str
    a: Side | None
    b: Side | None
    changes: dict[str, tuple[Any, Any]]  # feature → (A's value, B's value)

    @property
    def label(self) -> str:
        """The row as the summary line names it: its name, else its index (``12``, ``12→13``)."""
        if self.name:
            return self.name
        a, b = ("-" if i is None else str(i) for i in (self.index_a, self.index_b))
        return a if a == b else f"{a}→{b}"

    @property
    def delta(self) -> tuple[int, int]:
        """B − A in parameters and multiply-adds (a missing row counts as zero)."""
        a, b = self.a or Side({}, 0, 0), self.b or Side({}, 0, 0)
        return b.params - a.params, b.macs - a.macs


@dataclass(frozen=True)
class SpecDiff:
    labels: tuple[str, str]
    a: Summary
    b: Summary
    rows: list[RowDiff]

    @property
    def changed(self) -> list[RowDiff]:
        return [r for r in self.rows if r.changes]

    def to_dict(self) -> dict:
        def total(label: str, s: Summary) -> dict:
            keys = ("name", "resolution", "params", "macs")
            return {"label": label, **{k: getattr(s, k) for k in keys}}

        def side(s: Side | None) -> dict | None:
            return None if s is None else {**s.features, "params": s.params, "macs": s.macs}

        return {
            "a": total(self.labels[0], self.a),
            "b": total(self.labels[1], self.b),
            "delta": {"params": self.b.params - self.a.params, "macs": self.b.macs - self.a.macs},
            "rows": [
                {
                    "name": r.name,
                    "index_a": r.index_a,
                    "index_b": r.index_b,
                    "a": side(r.a),
                    "b": side(r.b),
                    "changes": {k: list(v) for k, v in r.changes.items()},
                    "delta": dict(zip(("params", "macs"), r.delta, strict=True)),
                }
                for r in self.rows
            ],
        }


def _sides(summary: Summary) -> list[Side]:
    return [Side(r.features, r.params, r.macs) for r in summary.rows]


def _changes(a: Side | None, b: Side | None) -> dict[str, tuple[Any, Any]]:
    if a is None or b is None:
        return {"row": ("absent" if a is None else "present", "absent" if b is None else "present")}
    return {k: (v, b.features[k]) for k, v in a.features.items() if b.features[k] != v}


def _keys(model: SpecNet, sides: list[Side], by_name: bool) -> list[Any]:
    """What aligns a row: its name, else what it compiles to less its input channels (which an
    inserted row changes for the row after it)."""
    if by_name:
        return [p.row.name for p in model.plans]
    return [tuple((k, str(v)) for k, v in s.features.items() if k != "in") for s in sides]


def align(a: SpecNet, b: SpecNet, sides_a: list[Side], sides_b: list[Side]) -> list[RowDiff]:
    """Pairs of rows of A and B, in order, as ``diff`` pairs lines."""
    by_name = all(p.row.name for p in (*a.plans, *b.plans))
    keys_a, keys_b = _keys(a, sides_a, by_name), _keys(b, sides_b, by_name)
    matcher = SequenceMatcher(None, keys_a, keys_b, autojunk=False)
    rows = []
    for _, i1, i2, j1, j2 in matcher.get_opcodes():  # equal and replace pair in order
        for i, j in zip_longest(range(i1, i2), range(j1, j2)):
            x = sides_a[i] if i is not None else None
            y = sides_b[j] if j is not None else None
            name = (b.plans[j].row.name if j is not None else a.plans[i].row.name) or ""
            rows.append(RowDiff(i, j, name, x, y, _changes(x, y)))
    return rows


def compare(a: SpecNet, b: SpecNet, labels: tuple[str, str] | None = None) -> SpecDiff:
    """Row-by-row comparison of two compiled networks, each at its own ``resolution``."""
    sa, sb = summarize(a), summarize(b)
    rows = align(a, b, _sides(sa), _sides(sb))
    return SpecDiff(labels or (a.spec.source, b.spec.source), sa, sb, rows)


def compare_files(
    spec_a: str | Path,
    spec_b: str | Path,
    both: Sequence[str] = (),
    only_a: Sequence[str] = (),
    only_b: Sequence[str] = (),
) -> SpecDiff:
    """``cli.py diff``: build two specs with ``KEY=VALUE`` overrides, as ``--set`` takes them.

    ``both`` applies to A and B, then ``only_a`` / ``only_b`` to one of them (winning over
    ``both``), so one file against itself with ``only_b`` shows what a single edit changes.
    """
    models, labels = [], []
    for side, path, own in (("SPEC_A", spec_a, only_a), ("SPEC_B", spec_b, only_b)):
        sets = [*both, *own]
        try:
            spec = load_spec(path, **dict(map(parse_assignment, sets)))
            models.append(build(spec, device="meta"))
        except SpecError as e:  # the same file may be both sides: say which one failed
            raise SpecError(f"{side} ({path}): {e}") from None
        labels.append(" ".join([str(path), *(f"--set {s}" for s in sets)]))
    return compare(*models, labels=(labels[0], labels[1]))


def _signed(n: int) -> str:
    return f"{n:+,}" if n else ""


def _cells(r: RowDiff) -> tuple[str, ...]:
    desc_a = describe(r.a.features) if r.a else "(no row)"
    desc_b = describe(r.b.features) if r.b else "(no row)"
    d_params, d_macs = r.delta
    return (
        f"{'*' if r.changes else ''}{'' if r.index_a is None else r.index_a}",
        "" if r.index_b is None else str(r.index_b),
        r.name,
        desc_a,
        "" if desc_b == desc_a else desc_b,  # blank: same as A
        f"{r.a.params:,}" if r.a else "",
        f"{r.b.params:,}" if r.b else "",
        _signed(d_params),
        f"{r.a.macs:,}" if r.a else "",
        f"{r.b.macs:,}" if r.b else "",
        _signed(d_macs),
    )


def format_diff(d: SpecDiff) -> str:
    """The comparison as a text table: both rows, their costs and B − A; then the totals."""
    a, b = d.a, d.b
    header = ("#A", "#B", "name", "A", "B", "params A", "params B", "Δ params", "MAdds A",
              "MAdds B", "Δ MAdds")  # fmt: skip
    total = (
        "",
        "",
        "",
        "total",
        "",
        f"{a.params:,}",
        f"{b.params:,}",
        _signed(b.params - a.params) or "0",
        f"{a.macs:,}",
        f"{b.macs:,}",
        _signed(b.macs - a.macs) or "0",
    )
    changed = ", ".join(f"{r.label} ({_how(r)})" for r in d.changed) or "none"
    return "\n".join(
        [
            f"A: {d.labels[0]}  ({a.name} at {a.resolution}×{a.resolution})",
            f"B: {d.labels[1]}  ({b.name} at {b.resolution}×{b.resolution})",
            *text_table(header, [_cells(r) for r in d.rows], total, {2, 3, 4}),
            f"rows that differ (*): {changed}",
            f"B − A: {_percent(b.params, a.params)} parameters, "
            f"{_percent(b.macs, a.macs)} multiply-adds",
        ]
    )


def _how(r: RowDiff) -> str:
    if r.a is None or r.b is None:
        return "only in B" if r.a is None else "only in A"
    return ", ".join(r.changes)


def _percent(new: int, old: int) -> str:
    return f"{new - old:+,} ({(new - old) / old:+.2%})" if old else f"{new - old:+,}"
