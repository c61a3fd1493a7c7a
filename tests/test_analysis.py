"""Multiply-adds: within 1 % of FlopCounterMode on torchvision's models; rows add to the total."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from mnv3spec import build, load_spec, summarize
from mnv3spec.model.summary import format_table

from .conftest import ROOT


def torchvision_macs(model: torch.nn.Module) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(("name", "paper_m"), [("large", 219), ("small", 56)])
def test_macs_match_torchvision_and_the_paper(name, paper_m):
    ours = summarize(
        build(load_spec(ROOT / "specs" / f"{name}.yaml", si=2, num_classes=1000, resolution=224))
    )
    theirs = torchvision_macs(getattr(torchvision.models, f"mobilenet_v3_{name}")())
    assert abs(ours.macs - theirs) / theirs < 0.01
    assert abs(ours.macs / 1e6 - paper_m) / paper_m < 0.02  # 216.6 M vs 219, 56.5 M vs 56


def test_rows_add_up_and_shapes_chain():
    summary = summarize(build(load_spec(ROOT / "specs" / "small.yaml")))
    assert sum(r.macs for r in summary.rows) == summary.macs
    assert sum(r.params for r in summary.rows) == summary.params
    for before, after in zip(summary.rows, summary.rows[1:], strict=False):
        assert before.out_shape == after.in_shape
    assert summary.rows[0].in_shape == (3, 32, 32)
    assert summary.rows[-1].out_shape == (100, 1, 1)


def test_table_has_one_line_per_row_and_totals():
    model = build(load_spec(ROOT / "specs" / "large.yaml", si=2, num_classes=1000, resolution=224))
    text = format_table(summarize(model))
    lines = text.splitlines()
    assert lines[0] == "mobilenet_v3_large at 224×224"
    assert len(lines) == 1 + 2 + 21 + 2 + 1
    assert "13  bneck13     bneck 5×5 112→160 exp 672 SE HS s2  112×14×14" in text
    assert "5,483,032" in lines[-2] and lines[-1].startswith("5.483 M parameters, 216.6 M")
