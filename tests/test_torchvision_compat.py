"""torchvision's weights load into the compiled specs, with the same outputs."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

from mnv3spec import CheckpointError, build, load_spec, load_torchvision

from .conftest import ROOT

TORCHVISION = {"large": mobilenet_v3_large, "small": mobilenet_v3_small}


@pytest.mark.parametrize(("name", "width"), [("large", 1.0), ("small", 1.0), ("small", 0.5)])
def test_same_outputs_as_torchvision(name, width):
    torch.manual_seed(0)
    theirs = TORCHVISION[name](width_mult=width).eval()
    with torch.no_grad():  # non-trivial BN statistics, so the copy of buffers is tested too
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = build(
        load_spec(ROOT / "specs" / f"{name}.yaml", width=width, si=2, num_classes=1000)
    ).eval()
    pairs = load_torchvision(ours, theirs.state_dict())
    assert len(pairs) == len(theirs.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5, rtol=0)


def test_classifier_false_keeps_our_head_for_other_class_counts():
    theirs = mobilenet_v3_small().state_dict()
    ours = build(load_spec(ROOT / "specs" / "small.yaml", si=2, num_classes=10))
    head = ours.layers.r16_conv2d.conv.weight.clone()
    load_torchvision(ours, theirs, classifier=False)
    assert torch.equal(ours.layers.r16_conv2d.conv.weight, head)
    expected = theirs["features.0.0.weight"]
    assert torch.equal(ours.layers.r00_conv2d.conv.weight, expected)


def test_a_different_network_is_refused_by_name():
    ours = build(load_spec(ROOT / "specs" / "small.yaml", si=2, num_classes=1000))
    with pytest.raises(CheckpointError, match="not the same network"):
        load_torchvision(ours, mobilenet_v3_large().state_dict())
    with pytest.raises(CheckpointError, match=r"classifier.3.weight has shape \(1000, 1024\)"):
        load_torchvision(
            build(load_spec(ROOT / "specs" / "small.yaml", si=2)), mobilenet_v3_small().state_dict()
        )
