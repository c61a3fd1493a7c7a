"""Spec → ``nn.Module``. Module names follow the spec rows: a row's ``name``
(``layers.bneck3.dw.conv.weight``), else its index and op (``layers.r03_bneck.dw.conv.weight``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import SpecError
from ..ops.layers import init_weights
from ..ops.padding import pad_like_tf
from ..ops.registry import OPS, Block, Context, spatial_after
from ..spec.load import Row, Spec


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


_EMPTY = nn.Sequential()  # the attributes a row's module name must not take (forward, training)


def plan(spec: Spec) -> list[RowPlan]:
    """Channels and shapes of every row at the spec's ``resolution``, checked to end in logits."""
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
        if hasattr(_EMPTY, name):  # add_module refuses a name that is an attribute
            raise SpecError(
                f"the row name '{name}' is taken by PyTorch (nn.Module.{name}); choose another",
                file=row.file or spec.source,
                line=row.line,
                field=f"layers[{row.index}].name",
            )
        plans.append(RowPlan(row, name, blocks, shape, out))
        shape = out
    _check_head(spec, plans)
    return plans


def _check_head(spec: Spec, plans: list[RowPlan]) -> None:
    last = plans[-1]
    where = {
        "file": last.row.file or spec.source,
        "line": last.row.line,
        "field": f"layers[{last.row.index}]",
    }
    c, h, w = last.out_shape
    row = f" (row {last.row.name})" if last.row.name else ""
    if (h, w) != (1, 1):
        raise SpecError(
            f"the network ends with a {c}×{h}×{w} map; it must end in a 1×1 map of class "
            f"scores (add a pool row before the classifier){row}",
            **where,
        )
    classes = spec.num_classes
    if c != classes:
        raise SpecError(
            f"the last row gives {c} outputs but num_classes is {classes}; "
            f"write out: $num_classes with fixed: true on the classifier row{row}",
            **where,
        )


class SpecNet(nn.Module):
    """A network compiled from a spec. ``model.spec`` is the resolved :class:`Spec`."""

    def __init__(self, spec: Spec, plans: list[RowPlan], *, device: str = "cpu") -> None:
        super().__init__()
        self.spec = spec
        self.plans = plans
        ctx = context(spec)
        # Built on the meta device and initialised once: PyTorch's default init is wasted work.
        with torch.device("meta"):
            self.layers = nn.Sequential(OrderedDict((p.name, _build_row(p, ctx)) for p in plans))
        _check_size(spec, sum(t.numel() for t in self.parameters()))
        if device != "meta":
            self.to_empty(device="cpu")
            init_weights(self)
        if spec.params.get("padding") == "same":
            pad_like_tf(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


MAX_PARAMETERS = 2**31  # 8 GiB of float32 weights: far past any MobileNet, short of a crash


def _check_size(spec: Spec, parameters: int) -> None:
    if parameters > MAX_PARAMETERS:
        raise SpecError(
            f"the network would have {parameters:,} parameters "
            f"({parameters * 4 / 2**30:,.0f} GiB); more than {MAX_PARAMETERS:,} is refused "
            f"(check width {spec.params['width']})",
            file=spec.source,
        )


def _build_row(p: RowPlan, ctx: Context) -> nn.Module:
    op = OPS[p.row.op]
    modules = [op.build(p.row.fields, b, ctx) for b in p.blocks]
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def build(spec: Spec, *, device: Literal["cpu", "meta"] = "cpu") -> SpecNet:
    """Compile a resolved :class:`Spec` into a ``SpecNet``:
    ``build(load_spec("specs/small.yaml", width=0.5))``, or ``build(spec.derive(si=2))``.

    ``device="meta"`` gives the network's shapes without its weights (no memory, no
    initialisation): enough to summarise it or check it fits before paying for a large one."""
    if not isinstance(spec, Spec):
        raise TypeError(f"build() takes a Spec (from load_spec), not {type(spec).__name__}")
    if device not in ("cpu", "meta"):
        raise ValueError(f"build() makes a network on cpu or meta, not {device!r}; move it after")
    return SpecNet(spec, plan(spec), device=device)
