"""Weight inheritance into a narrower network: the step NetAdapt (Yang et al., ECCV 2018, §3.2.1)
takes before fine-tuning a proposal, keeping the filters of largest ℓ2 norm.

A child differs from its parent only in the row fields the registry marks ``width`` (``exp``,
``out``…), and in two that adapt's ``--moves`` shrink: a smaller kernel (the child keeps the
centre of each filter) and an SE the child goes without (its tensors are left).

Every channel dimension of every tensor belongs to one *width*: the output of a
convolution, the expansion of a block, the squeeze of an SE. Depthwise convolutions, BatchNorm and
SE's excitation act channel by channel on the width they read, and a residual block adds into the
width of its input, so the widths a narrowing must keep consistent are found by following the
network once (:func:`_follow`). Each narrowed width keeps the channels whose producing filters
have the largest summed norm (for a residual group: every block that adds into it), and every
tensor indexed by it is cut with the same index set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..model.builder import SpecNet
from ..model.plan import RowPlan
from ..ops.layers import Bneck, ConvBNAct, SqueezeExcite
from ..ops.registry import OPS


@dataclass(frozen=True)
class Kept:
    """One narrowed width: ``kept`` of the parent's ``of`` channels of ``row``'s ``field``
    (``out``, ``exp``, ``se`` for the squeeze; ``exp[1]`` for block 1 of a repeated row)."""

    row: str
    field: str
    kept: int
    of: int

    def __str__(self) -> str:
        return f"{self.row}: {self.field} {self.of} → {self.kept} kept by filter norm"


@dataclass(eq=False)
class _Width:
    """Channels that must be cut alike: their size in the parent and child, the filters that
    produce them (whose norms choose), and the index set kept (None: all of them)."""

    size: int
    label: str | None = None  # what it is, for errors: "row bneck3's exp"
    filters: list[torch.Tensor] = field(default_factory=list)
    child: int | None = None
    keep: torch.Tensor | None = None


@dataclass
class _Wiring:
    """Which width each leading dimension of each ``state_dict`` tensor runs over."""

    dims: dict[str, tuple[_Width, ...]] = field(default_factory=dict)
    labels: list[tuple[str, str, _Width]] = field(default_factory=list)  # in network order

    def new(self, size: int, row: str, name: str) -> _Width:
        return _Width(size, f"row {row}'s {name}")

    def produce(self, width: _Width, weight: torch.Tensor, row: str, name: str) -> None:
        width.filters.append(weight.detach())
        if not any(r == row and n == name for r, n, _ in self.labels):
            self.labels.append((row, name, width))

    def channelwise(self, prefix: str, module: nn.Module, width: _Width) -> None:
        """Every tensor of ``module`` (BatchNorm, bias) runs over ``width`` (scalars over none)."""
        for key, tensor in module.state_dict().items():
            self.dims[f"{prefix}.{key}"] = (width,) if tensor.dim() else ()


def _follow_conv(
    w: _Wiring, prefix: str, m: ConvBNAct, x: _Width, row: str, name: str, into: _Width | None
) -> _Width:
    """A conv block reading ``x``: depthwise stays on ``x``; otherwise it produces ``into`` (a
    residual's width) or a new width named ``name``."""
    conv = m.conv
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if depthwise:
        y = x
        w.dims[f"{prefix}.conv.weight"] = (x,)
    else:
        y = into or w.new(conv.out_channels, row, name)
        w.dims[f"{prefix}.conv.weight"] = (y, x)
        w.produce(y, conv.weight, row, name)
    if conv.bias is not None:
        w.dims[f"{prefix}.conv.bias"] = (y,)
    if getattr(m, "bn", None) is not None:
        w.channelwise(f"{prefix}.bn", m.bn, y)
    if getattr(m, "se", None) is not None:
        _follow_se(w, f"{prefix}.se", m.se, y, row, "se" + name.removeprefix("out"))
    return y


def _follow_se(w: _Wiring, prefix: str, se: SqueezeExcite, x: _Width, row: str, name: str) -> None:
    """SE reads ``x`` into its squeeze width (chosen by norm, like any other) and scales ``x``."""
    squeeze = w.new(se.fc1.out_channels, row, name)
    w.dims |= {f"{prefix}.fc1.weight": (squeeze, x), f"{prefix}.fc1.bias": (squeeze,)}
    w.dims |= {f"{prefix}.fc2.weight": (x, squeeze), f"{prefix}.fc2.bias": (x,)}
    w.produce(squeeze, se.fc1.weight, row, name)


def _follow_bneck(w: _Wiring, prefix: str, m: Bneck, x: _Width, row: str, block: str) -> _Width:
    """expand → depthwise → SE → project; a residual block projects into its input's width."""
    e = x
    if "expand" in dict(m.named_children()):
        e = _follow_conv(w, f"{prefix}.expand", m.expand, x, row, "exp" + block, None)
    _follow_conv(w, f"{prefix}.dw", m.dw, e, row, "exp" + block, None)
    if "se" in dict(m.named_children()):
        _follow_se(w, f"{prefix}.se", m.se, e, row, "se" + block)
    return _follow_conv(w, f"{prefix}.project", m.project, e, row, "out", x if m.residual else None)


def _follow_row(w: _Wiring, p: RowPlan, module: nn.Module, x: _Width) -> _Width:
    """The width a row's output runs over, its tensors recorded in ``w``."""
    repeated = type(module) is nn.Sequential  # a row of n > 1 blocks
    blocks = list(module) if repeated else [module]
    for i, block in enumerate(blocks):
        prefix = f"layers.{p.name}" + (f".{i}" if repeated else "")
        suffix = f"[{i}]" if repeated else ""
        if isinstance(block, Bneck):
            x = _follow_bneck(w, prefix, block, x, p.name, suffix)
        elif isinstance(block, ConvBNAct):
            x = _follow_conv(w, prefix, block, x, p.name, "out" + suffix, None)
        elif any(True for _ in block.parameters()):
            raise CheckpointError(
                f"row {p.name}: inherit does not know the channels of {type(block).__name__} "
                f"(op {p.row.op}), so it cannot narrow it"
            )
    return x  # pool, dropout: the channels pass through


def _follow(model: SpecNet) -> _Wiring:
    """The widths of ``model`` (the parent), row by row from the input image."""
    w = _Wiring()
    x = _Width(model.spec.in_channels, "the input image")
    for p in model.plans:
        x = _follow_row(w, p, getattr(model.layers, p.name), x)
    return w


def narrowing_problem(parent: SpecNet, child: SpecNet) -> str | None:
    """How the child differs from the parent in anything but width: the first row, or None."""
    if parent.spec.num_classes != child.spec.num_classes:
        return (
            f"it has {child.spec.num_classes} classes and the parent {parent.spec.num_classes}; "
            "class scores are not a width to narrow"
        )
    ours, theirs = [p.name for p in child.plans], [p.name for p in parent.plans]
    if ours != theirs:
        i = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
            min(map(len, (ours, theirs))),
        )
        return (
            f"its rows are not the parent's: row {i} is {_nth(theirs, i)} in the parent and "
            f"{_nth(ours, i)} in the child (rows are matched by name)"
        )
    for p, c in zip(parent.plans, child.plans, strict=True):
        problem = _row_differs(p, c, getattr(parent.layers, p.name), getattr(child.layers, c.name))
        if problem:
            return f"row {p.name} {problem}"
    return None


def _nth(names: list[str], i: int) -> str:
    return f"'{names[i]}'" if i < len(names) else "missing"


def _shrinks(key: str, found: Any, wanted: Any) -> bool:
    """A field the child may have smaller than the parent, besides its widths (adapt's
    ``--moves``): an odd kernel, whose centre the child keeps, or an SE the child goes without."""
    if key == "k":
        return isinstance(found, int) and isinstance(wanted, int) and 0 < wanted <= found
    return key == "se" and bool(found) and not wanted


def _row_differs(p: RowPlan, c: RowPlan, parent: nn.Module, child: nn.Module) -> str | None:
    if p.row.op != c.row.op:
        return f"is a {p.row.op} in the parent and a {c.row.op} in the child"
    fields = OPS[p.row.op].fields
    for key, f in fields.items():
        found, wanted = p.row.fields.get(key), c.row.fields.get(key)
        if not f.width and found != wanted and not _shrinks(key, found, wanted):
            widths = ", ".join(k for k, f in fields.items() if f.width)
            return (
                f"has {key} {found} in the parent and {wanted} in the child; only its widths "
                f"({widths}) may differ, its kernel shrink, or its SE go"
            )
    se_off = not c.row.fields.get("se", True)
    kept = [k for k in parent.state_dict() if not (se_off and "se" in k.split("."))]
    if kept != list(child.state_dict()):
        return (
            "has other layers in the child (an expansion appears or goes when exp meets the "
            "input width)"
        )
    # A block may start adding its input in the child (its output narrowed to its input's
    # width), each side keeping its own filters; one that adds it in the parent must go on doing
    # so, since its input and output are one width there.
    was = [m.residual for m in parent.modules() if hasattr(m, "residual")]
    now = [m.residual for m in child.modules() if hasattr(m, "residual")]
    if any(p and not c for p, c in zip(was, now, strict=True)):
        return (
            "adds its input to its output in the parent but not in the child (a residual "
            "block's input and output widths must narrow together)"
        )
    return None


def _measure(w: _Wiring, child: dict[str, torch.Tensor], parent: dict[str, torch.Tensor]) -> None:
    """Each width's size in the child, read from the child's tensors; refused when wider."""
    for key, widths in w.dims.items():
        if key not in child:  # an SE the child goes without
            continue
        shape, theirs = child[key].shape, parent[key].shape
        if len(shape) != len(theirs) or any(
            a > b for a, b in zip(shape[len(widths) :], theirs[len(widths) :], strict=True)
        ):  # kernels: the rows compared them, a smaller one is the parent's centre
            raise CheckpointError(
                f"{key} is {tuple(shape)} in the child, {tuple(theirs)} in the parent"
            )
        for width, size in zip(widths, shape, strict=False):
            if width.child is None:
                width.child = size
            elif width.child != size:  # the child's own build keeps its widths consistent
                raise CheckpointError(f"{key}: {width.label} has {width.child} and {size} channels")
    for widths in w.dims.values():
        for width in widths:
            if width.child is not None and width.child > width.size:
                raise CheckpointError(
                    f"the child is not a narrowing of the parent: {width.label} has {width.child} "
                    f"channels in the child and {width.size} in the parent (a child may only "
                    "be narrower)"
                )


def filter_norms(filters: list[torch.Tensor]) -> torch.Tensor:
    """How much each channel of a width is worth keeping: the ℓ2 norms of the filters producing
    it, summed over its producers (a residual group has several). NetAdapt (Yang et al. 2018,
    §3.2.1) keeps the filters of largest ℓ2 norm; the sum makes one choice for a group."""
    return sum(f.flatten(1).double().norm(dim=1) for f in filters)


Score = Callable[[list[torch.Tensor]], torch.Tensor]  # a width's producing filters → per channel


def _choose(width: _Width, score: Score) -> None:
    """The ``child`` channels of highest score, in their original order."""
    if width.child in (None, width.size) or width.keep is not None:
        return  # None: only in an SE the child goes without
    if not width.filters:
        raise CheckpointError(
            f"the child is not a narrowing of the parent: {width.label} has {width.child} "
            f"channels in the child and {width.size} in the parent, and no filters to choose from"
        )
    order = torch.sort(score(width.filters), descending=True, stable=True).indices
    width.keep = order[: width.child].sort().values


def inherit(parent: SpecNet, child: SpecNet, *, score: Score = filter_norms) -> list[Kept]:
    """Copy ``parent``'s weights and BatchNorm statistics into ``child``, a narrowing of it (the
    same rows by name, kinds, strides and activations; fewer or as many channels; a kernel as
    large or smaller, whose centre is kept; an SE, or none where the parent has one),
    keeping in every narrowed width the channels of largest filter norm (or highest ``score``:
    ``bench/inherit.py`` compares other rules). Returns what was kept, one :class:`Kept` per
    narrowed width of a row, in network order.

    Raises :class:`CheckpointError` naming the first row that differs in anything but width, or
    the first width the child has wider."""
    problem = narrowing_problem(parent, child)
    if problem:
        raise CheckpointError(f"the child is not a narrowing of the parent: {problem}")
    w = _follow(parent)
    theirs, mine = parent.state_dict(), child.state_dict()
    if set(w.dims) != set(theirs):  # every layer _follow_row knows records all its tensors
        missed = next(k for k in theirs if k not in w.dims)
        raise CheckpointError(f"inherit does not know which channels {missed} runs over")
    _measure(w, mine, theirs)
    for widths in w.dims.values():
        for width in widths:
            _choose(width, score)
    with torch.no_grad():
        for key, widths in w.dims.items():
            if key not in mine:
                continue
            tensor = theirs[key]
            for dim, width in enumerate(widths):
                if width.keep is not None:
                    tensor = tensor.index_select(dim, width.keep.to(tensor.device))
            for dim in range(len(widths), tensor.dim()):  # a smaller kernel: the centre
                cut = tensor.shape[dim] - mine[key].shape[dim]
                tensor = tensor.narrow(dim, cut // 2, mine[key].shape[dim])
            mine[key].copy_(tensor)
    return [Kept(row, name, x.child, x.size) for row, name, x in w.labels if x.keep is not None]
