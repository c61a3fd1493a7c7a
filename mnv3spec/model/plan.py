"""Spec → plan: every row's blocks, channels and shapes, checked to end in class scores.

Arithmetic on the operator registry only (no torch), so ``validate`` checks shapes without
importing it; :mod:`.builder` compiles a plan into modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError
from ..ops.registry import OPS, Block, Context, spatial_after
from ..spec.resolve import Spec
from ..spec.rows import Row


@dataclass(frozen=True)
class RowPlan:
    """What one spec row compiles to: its module name, blocks and input → output shape (C, H, W)."""

    row: Row
    name: str
    blocks: tuple[Block, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]


def context(spec: Spec) -> Context:
    return Context(width=spec.width, divisor=spec.divisor, bn=spec.bn)


def plan_rows(spec: Spec) -> list[RowPlan]:
    """Channels and shapes of every row at the spec's ``resolution``, unchecked."""
    ctx = context(spec)
    size = spec.resolution
    shape = (spec.in_channels, size, size)
    digits = len(str(len(spec.rows) - 1))
    plans = []
    for row in spec.rows:
        op = OPS[row.op]
        blocks = tuple(op.plan(row.fields, shape[0], ctx))
        out = (blocks[-1].out_ch, *(spatial_after(op, list(blocks), shape[1]),) * 2)
        name = row.name or f"r{row.index:0{digits}d}_{row.op}"
        plans.append(RowPlan(row, name, blocks, shape, out))
        shape = out
    return plans


def plan(spec: Spec) -> list[RowPlan]:
    """Channels and shapes of every row at the spec's ``resolution``, checked to end in logits."""
    plans = plan_rows(spec)
    problems = head_errors(spec, plans)
    if problems:
        raise problems[0]
    return plans


def head_errors(spec: Spec, plans: list[RowPlan]) -> list[SpecError]:
    """What keeps the network from ending in class scores: a map larger than 1×1, a count of
    outputs other than ``num_classes`` (both, when both are wrong)."""
    last = plans[-1]
    where = {
        "file": last.row.file or spec.source,
        "line": last.row.line,
        "field": f"layers[{last.row.index}]",
    }
    c, h, w = last.out_shape
    row = f" (row {last.row.name})" if last.row.name else ""
    problems = []
    if (h, w) != (1, 1):
        problems.append(
            SpecError(
                f"the network ends with a {c}×{h}×{w} map; it must end in a 1×1 map of class "
                f"scores (add a pool row before the classifier){row}",
                **where,
            )
        )
    classes = spec.num_classes
    if c != classes:
        problems.append(
            SpecError(
                f"the last row gives {c} outputs but num_classes is {classes}; "
                f"write out: $num_classes with fixed: true on the classifier row{row}",
                **where,
            )
        )
    return problems
