"""max_difference: NaN and infinity are failures, never a difference of 0."""

from __future__ import annotations

import math

import torch
from torch import nn

from mnv3spec.model.parity import Difference, max_difference


def test_identical_functions_differ_by_nothing():
    model = nn.Linear(4, 3)
    d = max_difference(model, model, [(2, 4), (5, 4)])
    assert d.max_abs == 0.0 and d.scale > 0 and d.within(1e-6, 1e-6)


def test_a_nan_or_an_infinity_on_either_side_fails():
    model = nn.Linear(4, 3)
    for bad in (math.nan, math.inf):
        d = max_difference(model, lambda x, bad=bad: model(x) * bad, [(2, 4)])
        assert not d.finite and not d.within()
        with torch.no_grad():
            broken = nn.Linear(4, 3)
            broken.weight.fill_(bad)
        assert not max_difference(broken, broken, [(2, 4)]).within()


def test_within_takes_the_tighter_of_absolute_and_relative():
    assert Difference(1e-5, 1.0).within(1e-4, 1e-3)
    assert not Difference(1e-5, 1e-3).within(1e-4, 1e-3)  # 1e-3 × 1e-3 = 1e-6
    assert not Difference(2e-4, 1e3).within(1e-4, 1e-3)
