"""Per-row shapes, parameters and multiply-adds of a compiled network.

Multiply-adds come from ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2), attributed to the
spec rows through the module names — there is no hand-written counter to drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .builder import SpecNet


@dataclass(frozen=True)
class RowSummary:
    index: int
    op: str
    name: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: int
    macs: int


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
    """Multiply-adds per module name (and ``"Global"`` for the total) of one image, eval mode."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        model.train(was_training)
    prefix = type(model).__name__ + "."
    return {
        key.removeprefix(prefix): sum(ops.values()) // 2
        for key, ops in counter.get_flop_counts().items()
    }


def summarize(model: SpecNet) -> Summary:
    """The compiled network row by row at the spec's ``resolution``."""
    params = model.spec.params
    resolution = int(params["resolution"])
    macs = count_macs(model, resolution, int(params.get("in_channels", 3)))
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
            )
        )
    total_params = sum(t.numel() for t in model.parameters())
    return Summary(model.spec.name, resolution, rows, total_params, macs.get("Global", 0))


def _shape(shape: tuple[int, int, int]) -> str:
    return "×".join(map(str, shape))


def _row_detail(model: SpecNet, index: int) -> str:
    f = model.plans[index].row.fields
    blocks = model.plans[index].blocks
    parts = []
    if "k" in f:
        parts.append(f"{f['k']}×{f['k']}")
    if blocks[0].exp is not None:
        parts.append(f"exp {blocks[0].exp}")
    if f.get("se"):
        parts.append("SE")
    if f.get("nl", "none") != "none":
        parts.append(f["nl"])
    if f.get("bn") is False:
        parts.append("NBN")
    if len(blocks) > 1:
        parts.append(f"×{len(blocks)}")
    if "p" in f:
        parts.append(f"p={f['p']}")
    return " ".join(parts)


def format_table(model: SpecNet, summary: Summary) -> str:
    """The summary as a text table, one line per spec row, then totals."""
    header = ("#", "operator", "detail", "input", "output", "params", "MAdds")
    lines = [
        (
            str(r.index),
            r.op,
            _row_detail(model, r.index),
            _shape(r.in_shape),
            _shape(r.out_shape),
            f"{r.params:,}",
            f"{r.macs:,}",
        )
        for r in summary.rows
    ]
    total = ("", "total", "", "", "", f"{summary.params:,}", f"{summary.macs:,}")
    widths = [max(len(row[i]) for row in [header, *lines, total]) for i in range(len(header))]
    right = {0, 5, 6}

    def fmt(row: tuple) -> str:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(fmt(header))
    title = f"{summary.name} at {summary.resolution}×{summary.resolution}"
    footer = f"{summary.params / 1e6:.3f} M parameters, {summary.macs / 1e6:.1f} M multiply-adds"
    return "\n".join([title, fmt(header), rule, *map(fmt, lines), rule, fmt(total), footer])
