"""How far another implementation of a network (an exported file, torchvision's twin) is from the
network itself, with NaN and infinity counted as failure: ``max(0.0, nan)`` is ``0.0`` in Python,
so a plain running maximum would pass a model whose outputs are all NaN."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Difference:
    """The largest ``|model(x) − other(x)|`` and the largest ``|model(x)|`` it is judged against;
    ``max_abs`` is infinite when either output holds a NaN or an infinity."""

    max_abs: float
    scale: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.max_abs) and math.isfinite(self.scale)

    def within(self, tolerance: float = math.inf, relative: float = math.inf) -> bool:
        """Finite, and at most ``tolerance`` and ``relative`` × the largest output."""
        return self.finite and self.max_abs <= min(tolerance, relative * self.scale)


def max_difference(
    model: nn.Module, other: Callable[[torch.Tensor], torch.Tensor], shapes: list[tuple[int, ...]]
) -> Difference:
    """:class:`Difference` of ``other`` from ``model`` over seeded random inputs of ``shapes``."""
    g = torch.Generator().manual_seed(0)
    diff = scale = 0.0
    with torch.inference_mode():
        for shape in shapes:
            x = torch.randn(shape, generator=g)
            ref, got = model(x), other(x)
            if not (ref.isfinite().all() and got.isfinite().all()):
                return Difference(math.inf, math.inf)
            diff = max(diff, (ref - got).abs().max().item())
            scale = max(scale, ref.abs().max().item())
    return Difference(diff, scale)
