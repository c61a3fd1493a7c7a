"""Two compiled specs side by side, row by row: which rows differ, how, and what it costs.

Rows are aligned by index, since a spec row is a row of the paper's table; when one network has
more rows, its extra rows show as added (only in B) or removed (only in A). Rows are compared on
what they compile to — operator, kernel, channels, expansion, SE, NL, BN, stride, repeats — so
``exp: x3`` and ``exp: 72`` are the same row when both give 72 channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec.load import load_spec, parse_assignment
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
    """Row ``index`` of A and of B (None where that network has no such row)."""

    index: int
    a: Side | None
    b: Side | None
    changes: dict[str, tuple[Any, Any]]  # feature → (A's value, B's value)

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
                    "index": r.index,
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


def compare(a: SpecNet, b: SpecNet, labels: tuple[str, str] | None = None) -> SpecDiff:
    """Row-by-row comparison of two compiled networks, each at its own ``resolution``."""
    sa, sb = summarize(a), summarize(b)
    pairs = zip_longest(_sides(sa), _sides(sb))
    rows = [RowDiff(i, x, y, _changes(x, y)) for i, (x, y) in enumerate(pairs)]
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
        f"{'*' if r.changes else ''}{r.index}",
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
    header = ("#", "A", "B", "params A", "params B", "Δ params", "MAdds A", "MAdds B", "Δ MAdds")
    total = (
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
    changed = ", ".join(f"{r.index} ({_how(r)})" for r in d.changed) or "none"
    return "\n".join(
        [
            f"A: {d.labels[0]}  ({a.name} at {a.resolution}×{a.resolution})",
            f"B: {d.labels[1]}  ({b.name} at {b.resolution}×{b.resolution})",
            *text_table(header, [_cells(r) for r in d.rows], total, {1, 2}),
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
