"""The edits a NetAdapt step proposes, by row name: the paper's two kinds — one row's expansion
(``exp``), or the ``out`` width shared by a residual group (every row whose output is summed with
another's changes with it, so the residuals still match) — and, beyond the paper, a row's
kernel 5→3 or its SE off. Each shrinks in multiples of the spec's divisor (the ÷8 rule,
:func:`~mnv3spec.ops.rules.make_divisible`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..model.plan import RowPlan, plan_rows
from ..spec.resolve import Spec

Edits = dict[str, dict[str, Any]]  # row name → fields set: a variant file's ``rows:``
KINDS = ("exp", "out")  # the paper's
EXTRA = ("kernel", "se")  # --moves


@dataclass(frozen=True)
class Move:
    """Where a proposal shrinks: ``kind`` on ``rows`` (one row, or a residual group's rows)."""

    kind: str
    rows: tuple[str, ...]

    @property
    def label(self) -> str:
        more = f"+{len(self.rows) - 1}" if len(self.rows) > 1 else ""
        return f"{self.kind} {self.rows[0]}{more}"


def with_edits(edits: Edits, rows: tuple[str, ...], field: str, value: Any) -> Edits:
    """``edits`` with ``field`` set to ``value`` on ``rows`` (a new mapping)."""
    out = copy.deepcopy(edits)
    for row in rows:
        out.setdefault(row, {})[field] = value
    return out


def _residual(p: RowPlan) -> bool:
    b = p.blocks[0]
    return p.row.op == "bneck" and b.stride == 1 and b.in_ch == b.out_ch


def groups(*specs: Spec) -> list[tuple[str, ...]]:
    """The bneck rows whose ``out`` can shrink, grouped: a row whose output a residual row adds
    to its own output shares its width with that row (and with the next one, and so on). With
    several specs (the trained one and the deployed one, whose strides ``--set si`` may change),
    groups that share a row are one."""
    merged: list[set[str]] = []
    for group in (g for spec in specs for g in _groups(spec)):
        overlapping = [m for m in merged if m & set(group)]
        merged = [m for m in merged if not m & set(group)]
        merged.append(set(group).union(*overlapping))
    order = {r.name: r.index for r in specs[0].rows}
    return sorted(
        (tuple(sorted(m, key=order.__getitem__)) for m in merged), key=lambda g: order[g[0]]
    )


def _groups(spec: Spec) -> list[tuple[str, ...]]:
    plans = plan_rows(spec)
    found: list[list[str]] = []
    for i, p in enumerate(plans):
        if p.row.name is None or "out" not in p.row.fields or p.row.fields.get("fixed"):
            continue
        if _residual(p) and i and found and found[-1][-1] == plans[i - 1].row.name:
            found[-1].append(p.row.name)
        elif p.row.op == "bneck" or (i + 1 < len(plans) and _residual(plans[i + 1])):
            found.append([p.row.name])
    return [tuple(g) for g in found]


def moves(spec: Spec, extra: tuple[str, ...] = (), deployed: Spec | None = None) -> list[Move]:
    """Every move of the kinds asked for, in the spec's order; ``deployed``: the spec as timed,
    whose residual groups count too."""
    found = [Move("out", g) for g in groups(spec, *([deployed] if deployed else []))]
    for row in spec.rows:
        if row.name is None or row.op != "bneck":
            continue
        if isinstance(row.fields.get("exp"), int):
            found.append(Move("exp", (row.name,)))
        if "kernel" in extra and row.fields.get("k") == 5:
            found.append(Move("kernel", (row.name,)))
        if "se" in extra and row.fields.get("se"):
            found.append(Move("se", (row.name,)))
    return found


def can_inherit(parent: Spec, child: Spec) -> bool:
    """Whether ``child`` can inherit ``parent``'s weights, as
    :func:`~mnv3spec.weights.inherit.inherit` checks it: only narrower, a kernel smaller, an SE
    gone (an expansion appears or goes where a row's ``exp`` meets its input width, and such a
    child cannot)."""
    from ..model.builder import build
    from ..weights.inherit import narrowing_problem

    return narrowing_problem(build(parent, device="meta"), build(child, device="meta")) is None


def shrunk(spec: Spec, edits: Edits, move: Move, multiples: int) -> tuple[Edits, str] | None:
    """``edits`` with ``move`` applied ``multiples`` divisors deep (kernel and SE: once), and
    what changed in words; None where the row cannot shrink that far (below one divisor)."""
    fields = {r.name: r.fields for r in spec.rows}[move.rows[0]]
    if move.kind == "kernel":
        ok = fields.get("k") == 5 and multiples == 1
        return (with_edits(edits, move.rows, "k", 3), f"k {move.rows[0]} 5→3") if ok else None
    if move.kind == "se":
        ok = fields.get("se") and multiples == 1
        return (with_edits(edits, move.rows, "se", False), f"se {move.rows[0]} off") if ok else None
    now = int(fields[move.kind])
    value = now - multiples * spec.divisor
    if value < spec.divisor:
        return None
    return with_edits(edits, move.rows, move.kind, value), f"{move.label} {now}→{value}"
