"""Per-row shapes, parameters and multiply-adds of a compiled network.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), attributed to the
spec rows through the module names — there is no hand-written counter to drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..ops.registry import OPS
from ..text import text_table
from .builder import SpecNet
from .plan import RowPlan


@dataclass(frozen=True)
class RowSummary:
    index: int
    op: str
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: int
    macs: int
    features: dict[str, Any]  # what the row compiles to: op, k, in, exp, out, se, nl, bn, s, n, p


@dataclass(frozen=True)
class Summary:
    name: str
    resolution: int
    rows: list[RowSummary]
    params: int
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(model: torch.nn.Module, resolution: int, in_channels: int = 3) -> dict[str, int]:
    """Multiply-adds per module name (and ``"Global"`` for the total) of one image, eval mode.

    The forward pass runs on the meta device (shapes only, no memory), so counting a network at
    any resolution costs nothing and the model's own weights are untouched."""
    was_training = model.training
    model.eval()
    shapes = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()}
    image = torch.empty(1, in_channels, resolution, resolution, device="meta")
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            functional_call(model, shapes, (image,))
    finally:
        model.train(was_training)
    prefix = type(model).__name__ + "."
    return {
        key.removeprefix(prefix): sum(ops.values()) // 2
        for key, ops in counter.get_flop_counts().items()
    }


def summarize(model: SpecNet) -> Summary:
    """The compiled network row by row at the spec's ``resolution``."""
    resolution = model.spec.resolution
    macs = count_macs(model, resolution, model.spec.in_channels)
    rows = []
    for p in model.plans:
        module = model.layers.get_submodule(p.name)
        rows.append(
            RowSummary(
                index=p.row.index,
                op=p.row.op,
                name=p.name,
                in_shape=p.in_shape,
                out_shape=p.out_shape,
                params=sum(t.numel() for t in module.parameters()),
                macs=macs.get(f"layers.{p.name}", 0),
                features=row_features(p),
            )
        )
    total_params = sum(t.numel() for t in model.parameters())
    return Summary(model.spec.name, resolution, rows, total_params, macs.get("Global", 0))


def _shape(shape: tuple[int, int, int]) -> str:
    return "×".join(map(str, shape))


def row_features(p: RowPlan) -> dict[str, Any]:
    """The comparable columns of a compiled row; None where the operator has no such column."""
    f, op = p.row.fields, OPS[p.row.op]
    exps = [b.exp for b in p.blocks if b.exp is not None]
    convolves = "k" in op.fields  # pool and dropout rows have no channels of their own
    return {
        "op": p.row.op,
        "k": f.get("k"),  # pool and dropout have none
        "in": p.in_shape[0] if convolves else None,
        "exp": exps or None,
        "out": p.out_shape[0] if convolves else None,
        "se": bool(f.get("se", False)),  # only conv2d and bneck can have one
        "nl": f.get("nl", "none"),
        "bn": f["bn"] if "bn" in op.fields else None,
        "s": p.blocks[0].stride if "s" in op.fields else None,
        "n": len(p.blocks),
        "p": f.get("p"),
    }


def describe(feat: dict[str, Any]) -> str:
    """A row in a few words: ``bneck 5×5 40→48 exp 120 SE HS s1``."""
    parts = [feat["op"]]
    if feat["in"] is not None:
        parts += [f"{feat['k']}×{feat['k']}", f"{feat['in']}→{feat['out']}"]
    if feat["exp"]:
        parts.append("exp " + "/".join(map(str, dict.fromkeys(feat["exp"]))))
    if feat["se"]:
        parts.append("SE")
    if feat["nl"] != "none":
        parts.append(feat["nl"])
    if feat["bn"] is False:
        parts.append("NBN")
    if feat["s"] is not None:
        parts.append(f"s{feat['s']}")
    if feat["n"] > 1:
        parts.append(f"×{feat['n']}")
    if feat["p"] is not None:
        parts.append(f"p={feat['p']}")
    return " ".join(parts)


def format_table(summary: Summary) -> str:
    """The summary as a text table, one line per spec row, then totals."""
    header = ("#", "name", "row", "input", "output", "params", "MAdds")
    lines = [
        (
            str(r.index),
            r.name,
            describe(r.features),
            _shape(r.in_shape),
            _shape(r.out_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
        )
        for r in summary.rows
    ]
    total = ("", "", "total", "", "", f"{summary.params:,}", f"{summary.macs:,}")
    title = f"{summary.name} at {summary.resolution}×{summary.resolution}"
    footer = f"{summary.params / 1e6:.3f} M parameters, {summary.macs / 1e6:.1f} M multiply-adds"
    return "\n".join([title, *text_table(header, lines, total, {1, 2, 3, 4}), footer])
