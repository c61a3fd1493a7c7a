"""torchvision's weights load into the compiled specs, with the same outputs; the twin that
`latency --reference torchvision` times computes our function."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small

from mnv3spec import CheckpointError, build, load_spec, load_torchvision
from mnv3spec.model.parity import max_difference
from mnv3spec.weights import torchvision as tv
from mnv3spec.weights.torchvision import torchvision_twin

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"
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
    head = ours.layers.classifier.conv.weight.clone()
    load_torchvision(ours, theirs, classifier=False)
    assert torch.equal(ours.layers.classifier.conv.weight, head)
    expected = theirs["features.0.0.weight"]
    assert torch.equal(ours.layers.stem.conv.weight, expected)


def test_a_different_network_is_refused_by_name():
    ours = build(load_spec(ROOT / "specs" / "small.yaml", si=2, num_classes=1000))
    with pytest.raises(CheckpointError, match="not the same network"):
        load_torchvision(ours, mobilenet_v3_large().state_dict())
    with pytest.raises(CheckpointError, match=r"classifier.3.weight has shape \(1000, 1024\)"):
        load_torchvision(
            build(load_spec(ROOT / "specs" / "small.yaml", si=2)), mobilenet_v3_small().state_dict()
        )


@pytest.mark.parametrize("si", [1, 2])
def test_torchvision_twin_computes_our_function_even_at_si_1(si):
    ours = build(load_spec(SMALL, width=0.25, si=si, resolution=40)).eval()
    twin = torchvision_twin(ours)
    assert type(twin).__name__ == "MobileNetV3"
    load_torchvision(ours, twin.state_dict())
    assert max_difference(ours, twin, [(2, 3, 40, 40)]).within(relative=1e-4)
    # same weights, but torchvision's stock strides would compute another function at si=1
    assert (twin.features[0][0].stride == (1, 1)) == (si == 1)


def test_the_twin_is_given_our_bn_eps():
    model = build(load_spec(SMALL, width=0.25, si=2, resolution=40, bn_eps=1e-5)).eval()
    twin = torchvision_twin(model)
    assert {m.eps for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-5}


def test_a_spec_torchvision_does_not_have_gets_no_twin():
    model = build(load_spec(SMALL, width=0.25, **{"layers.12.se": True}))  # the table as printed
    assert torchvision_twin(model) is None


def test_a_twin_whose_outputs_are_nan_is_no_twin(monkeypatch):
    real = tv.torchvision_v3

    def broken(*args, **kwargs):
        net = real(*args, **kwargs)
        with torch.no_grad():
            net.features[0][0].weight.fill_(float("nan"))
        return net

    monkeypatch.setattr(tv, "torchvision_v3", broken)
    model = build(load_spec(SMALL, width=0.25, si=2, resolution=40)).eval()
    assert torchvision_twin(model) is None  # max(0.0, nan) would have passed it


@pytest.mark.parametrize("name", ["large", "small"])
def test_state_dict_keys_and_shapes_are_those_checkpoints_hold(name):
    """The keys the saved checkpoints and the torchvision mapping rely on, row by row."""
    ours = build(load_spec(ROOT / "specs" / f"{name}.yaml", si=2, num_classes=1000))
    theirs = TORCHVISION[name]().state_dict()
    shapes = [tuple(v.shape) for v in ours.state_dict().values()]
    assert shapes == [tuple(v.shape) + ((1, 1) if v.dim() == 2 else ()) for v in theirs.values()]
    keys = list(ours.state_dict())
    assert keys[0] == "layers.stem.conv.weight"  # module names are the rows' names
    assert {k.split(".")[1] for k in keys} == {r.name for r in ours.spec.rows} - {"pool", "dropout"}
    blocks = {k.split(".")[2] for k in keys if k.startswith("layers.bneck")}
    assert blocks <= {"expand", "dw", "se", "project"}
