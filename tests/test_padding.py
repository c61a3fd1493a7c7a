"""TF's SAME padding (``padding: same``): the rule, the layer and the spec parameter."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mnv3spec import build, load_spec
from mnv3spec.ops.padding import SameConv2d, pad_like_tf, same_padding
from mnv3spec.ops.registry import PADDINGS
from mnv3spec.spec.schema import schema

from .conftest import ROOT


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (224, 3, 2, (0, 1)),
        (112, 5, 2, (1, 2)),
        (7, 3, 2, (1, 1)),
        (32, 3, 1, (1, 1)),
        (1, 1, 2, (0, 0)),
    ],
)
def test_same_padding_is_tfs_rule(size, kernel, stride, pads):
    assert same_padding(size, kernel, stride) == pads
    out = -(-size // stride)  # ceil: what SAME promises
    assert (size + sum(pads) - kernel) // stride + 1 == out


def test_pad_like_tf_changes_only_strided_convs_and_keeps_their_tensors():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 4, 3, 1, 1))
    keys = list(net.state_dict())
    x = torch.randn(1, 3, 8, 8)
    expected = net[1](F.conv2d(F.pad(x, (0, 1, 0, 1)), net[0].weight, net[0].bias, stride=2))
    pad_like_tf(net)
    assert type(net[0]) is SameConv2d and type(net[1]) is nn.Conv2d
    assert list(net.state_dict()) == keys
    torch.testing.assert_close(net(x), expected)


def test_the_spec_parameter_pads_and_keeps_shapes_and_counts():
    path = ROOT / "specs" / "small-tf.yaml"
    same, symmetric = build(load_spec(path)), build(load_spec(path, padding="symmetric"))
    assert any(isinstance(m, SameConv2d) for m in same.modules())
    assert not any(isinstance(m, SameConv2d) for m in symmetric.modules())
    assert [p.out_shape for p in same.plans] == [p.out_shape for p in symmetric.plans]
    symmetric.load_state_dict(same.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a, b = same.eval()(x), symmetric.eval()(x)
    assert (a - b).abs().max() > 1e-3 * a.abs().max()  # random-init logits are tiny


def test_schema_lists_the_paddings():
    assert schema()["$defs"]["params"]["properties"]["padding"]["enum"] == list(PADDINGS)
