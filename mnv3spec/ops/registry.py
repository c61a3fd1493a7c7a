"""The one registry of operators and activations.

The JSON Schema (``mnv3spec/spec/schema.py`` generates its op part from :data:`OPS` and
:data:`ACTIVATIONS`), the loader (which fills each field's default), the builder and the summary
all read it. Adding an operator is one entry here, its layer, and ``schema.json`` regenerated.

Loading, validating and planning a spec is arithmetic on this module, so it imports no torch:
each ``build`` function imports its layers when a network is actually built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .rules import conv_output_size, expand_by_ratio, scale_channels

if TYPE_CHECKING:
    from torch import nn

# Each activation a row may name, with the class of ``torch.nn`` it builds (None: no activation).
ACTIVATIONS: dict[str, str | None] = {
    "RE": "ReLU",
    "HS": "Hardswish",
    "R6": "ReLU6",
    "none": None,
}
PADDINGS = ("symmetric", "same")  # the ``padding`` parameter; ``ops/padding.py`` builds "same"


def activation_class(nl: str) -> type[nn.Module] | None:
    """The ``torch.nn`` class of an activation name (``"HS"`` → ``nn.Hardswish``)."""
    from torch import nn

    name = ACTIVATIONS[nl]
    return getattr(nn, name) if name else None


@dataclass(frozen=True)
class Context:
    """The resolved global parameters every operator may read."""

    width: float
    divisor: int
    bn: dict


@dataclass(frozen=True)
class Block:
    """One compiled block of a row: a row with ``n: 3`` has three."""

    in_ch: int
    out_ch: int
    stride: int
    exp: int | None = None


REQUIRED = object()  # a field with no default: every row of the operator must write it


@dataclass(frozen=True)
class Field:
    """One field of an operator's rows: its schema type (a ``$defs`` name of the spec schema:
    kernel, channels, expansion, stride, repeat, probability, nl, flag, factor) and its default.
    ``width`` marks a field that sets only how many channels a row has: a network that differs
    from another in such fields alone can inherit its weights (``weights/inherit.py``)."""

    type: str
    default: Any = REQUIRED
    width: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Op:
    """An operator: the fields a row of it may have (besides ``op``), how it plans its blocks,
    how it builds them."""

    name: str
    fields: dict[str, Field]
    plan: Callable[[dict, int, Context], list[Block]]
    build: Callable[[dict, Block, Context], nn.Module]  # imports torch when called
    pools: bool = False  # reduces the map to 1×1 whatever its size


def _out(row: dict, ctx: Context, min_width: float = 0.0) -> int:
    return scale_channels(row["out"], ctx.width, ctx.divisor, row["fixed"], min_width)


def _se(row: dict, ctx: Context) -> int | None:
    return ctx.divisor if row["se"] else None


def _plan_conv(row: dict, in_ch: int, ctx: Context) -> list[Block]:
    return [Block(in_ch, _out(row, ctx, row["min_width"]), row["s"])]


def _build_conv(row: dict, b: Block, ctx: Context) -> nn.Module:
    from .layers import ConvBNAct

    bn = ctx.bn if row.get("bn", True) else None
    act = activation_class(row.get("nl", "none"))
    se = _se(row, ctx)
    return ConvBNAct(
        b.in_ch, b.out_ch, row["k"], b.stride, act, bn, se_divisor=se, classifier=bn is None
    )


def _expansion(row: dict, in_ch: int, ctx: Context) -> int:
    exp = row["exp"]
    if isinstance(exp, str):  # "x6": a ratio of the rounded input channels
        return expand_by_ratio(in_ch, float(exp[1:]), ctx.divisor)
    return scale_channels(exp, ctx.width, ctx.divisor, row["fixed"])


def _repeat(row: dict, in_ch: int, out_ch: int, expansion: Callable[[int], int]) -> list[Block]:
    """``n`` blocks of a row: the stride on the first only, each expanding its own input."""
    blocks = []
    for i in range(row["n"]):
        stride = row["s"] if i == 0 else 1
        blocks.append(Block(in_ch, out_ch, stride, expansion(in_ch)))
        in_ch = out_ch
    return blocks


def _plan_bneck(row: dict, in_ch: int, ctx: Context) -> list[Block]:
    return _repeat(row, in_ch, _out(row, ctx), lambda c: _expansion(row, c, ctx))


def _build_bneck(row: dict, b: Block, ctx: Context) -> nn.Module:
    from .layers import Bneck

    act = activation_class(row["nl"])
    return Bneck(b.in_ch, b.exp, b.out_ch, row["k"], b.stride, act, ctx.bn, _se(row, ctx))


def _plan_bottleneck(row: dict, in_ch: int, ctx: Context) -> list[Block]:
    out_ch = scale_channels(row["c"], ctx.width, ctx.divisor)
    return _repeat(row, in_ch, out_ch, lambda c: expand_by_ratio(c, row["t"], ctx.divisor))


def _build_bottleneck(row: dict, b: Block, ctx: Context) -> nn.Module:
    from .layers import Bneck

    act = activation_class(row["nl"])
    return Bneck(b.in_ch, b.exp, b.out_ch, row["k"], b.stride, act, ctx.bn, None)


def _plan_dwconv(row: dict, in_ch: int, ctx: Context) -> list[Block]:
    return [Block(in_ch, in_ch, row["s"])]


def _build_dwconv(row: dict, b: Block, ctx: Context) -> nn.Module:
    from .layers import ConvBNAct

    act = activation_class(row["nl"])
    return ConvBNAct(b.in_ch, b.out_ch, row["k"], b.stride, act, ctx.bn, groups=b.in_ch)


def _plan_same(row: dict, in_ch: int, ctx: Context) -> list[Block]:
    return [Block(in_ch, in_ch, 1)]


def _build_pool(row: dict, b: Block, ctx: Context) -> nn.Module:
    from torch import nn

    return nn.AdaptiveAvgPool2d(1)


def _build_dropout(row: dict, b: Block, ctx: Context) -> nn.Module:
    from torch import nn

    return nn.Dropout(row["p"])


KERNEL, STRIDE, ACT = Field("kernel"), Field("stride"), Field("nl")
CHANNELS, FIXED = Field("channels", width=True), Field("flag", False, width=True)
OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op(
            "conv2d",
            {
                "k": KERNEL,
                "out": CHANNELS,
                "s": Field("stride", 1),
                "nl": Field("nl", "none"),
                "se": Field("flag", False),
                "bn": Field("flag", True),
                "fixed": FIXED,
                "min_width": Field(
                    "factor", 0.0, width=True
                ),  # 0: no floor under the width multiplier
            },
            _plan_conv,
            _build_conv,
        ),
        Op("dwconv", {"k": KERNEL, "s": STRIDE, "nl": ACT}, _plan_dwconv, _build_dwconv),
        Op(
            "bneck",
            {
                "k": KERNEL,
                "exp": Field("expansion", width=True),
                "out": CHANNELS,
                "se": Field("flag"),
                "nl": ACT,
                "s": STRIDE,
                "n": Field("repeat", 1),
                "fixed": FIXED,
            },
            _plan_bneck,
            _build_bneck,
        ),
        Op(
            "bottleneck",
            {
                "t": Field("factor", width=True),
                "c": CHANNELS,
                "n": Field("repeat"),
                "s": STRIDE,
                "k": KERNEL,
                "nl": ACT,
            },
            _plan_bottleneck,
            _build_bottleneck,
        ),
        Op("pool", {}, _plan_same, _build_pool, pools=True),
        Op("dropout", {"p": Field("probability")}, _plan_same, _build_dropout),
    ]
}


def with_defaults(op: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A row's fields with every optional field the row leaves out set to its default."""
    missing = {k: f.default for k, f in OPS[op].fields.items() if k not in fields}
    return {**fields, **{k: v for k, v in missing.items() if v is not REQUIRED}}


def spatial_after(op: Op, blocks: list[Block], size: int) -> int:
    """Spatial size after a row: pools go to 1, convolutions follow their strides."""
    if op.pools:
        return 1
    for b in blocks:
        size = conv_output_size(size, b.stride)
    return size
