"""Spec → ``nn.Module``. Module names follow the spec rows: a row's ``name``
(``layers.bneck3.dw.conv.weight``), else its index and op (``layers.r03_bneck.dw.conv.weight``)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

from ..errors import SpecError
from ..ops.layers import init_weights
from ..ops.padding import pad_like_tf
from ..ops.registry import OPS, Context
from ..spec.resolve import Spec
from .plan import RowPlan, context, plan


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
    plans = plan(spec)
    _check_names(spec, plans)
    return SpecNet(spec, plans, device=device)


_EMPTY = nn.Sequential()  # the attributes a row's module name must not take (forward, training)


def _check_names(spec: Spec, plans: list[RowPlan]) -> None:
    """A row's module name must not be an attribute of ``nn.Module``: ``add_module`` refuses it.
    Checked here, not in the plan, because the plan (and so ``validate``) imports no torch."""
    for p in plans:
        if hasattr(_EMPTY, p.name):
            raise SpecError(
                f"the row name '{p.name}' is taken by PyTorch (nn.Module.{p.name}); choose another",
                file=p.row.file or spec.source,
                line=p.row.line,
                field=f"layers[{p.row.index}].name",
            )
