"""The layers own their surgery: fuse(), the classifier flag, the explicit bottleneck path, and a
head that runs as a matrix product without changing parameters, names or outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnv3spec import build, load_spec
from mnv3spec.ops.layers import Bneck, ConvBNAct, Pointwise

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


def _randomise_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def test_fuse_folds_the_bn_into_the_conv_and_keeps_the_function():
    torch.manual_seed(0)
    block = ConvBNAct(8, 16, 3, 1, nn.Hardswish, {}, se_divisor=8)
    _randomise_bn(block)
    block.eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        before = block(x)
        block.fuse()
        after = block(x)
    assert "bn" not in dict(block.named_children()) and block.conv.bias is not None
    assert list(dict(block.named_children())) == ["conv", "act", "se"]
    assert (before - after).abs().max() < 1e-5
    block.fuse()  # nothing left to fold: a no-op


def test_fuse_refuses_a_block_in_training_mode():
    with pytest.raises(RuntimeError, match=r"call \.eval"):
        ConvBNAct(4, 4, 1, 1, None, {}).train().fuse()


def test_the_classifier_flag_is_set_by_the_spec_not_guessed():
    model = build(load_spec(SMALL, si=2, num_classes=1000))
    flagged = [n for n, m in model.named_modules() if isinstance(m, ConvBNAct) and m.classifier]
    assert flagged == ["layers.head", "layers.classifier"]  # the two NBN rows
    assert all(isinstance(model.get_submodule(n).conv, Pointwise) for n in flagged)
    # the N(0, 0.01) of a Linear layer, against Kaiming fan-out (std ≈ sqrt(2 / 1024) ≈ 0.044)
    assert model.layers.classifier.conv.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_bneck_path_is_explicit_and_its_names_unchanged():
    with_all = Bneck(16, 64, 24, 3, 2, nn.ReLU, {}, se_divisor=8)
    assert [n for n, _ in with_all.named_children()] == ["expand", "dw", "se", "project"]
    without = Bneck(16, 16, 16, 3, 1, nn.ReLU, {}, None)  # exp == in: no expansion, a shortcut
    assert [n for n, _ in without.named_children()] == ["dw", "project"] and without.residual
    model = build(load_spec(SMALL, width=0.25))
    keys = list(model.state_dict())
    assert keys[:4] == [
        "layers.stem.conv.weight",
        "layers.stem.bn.weight",
        "layers.stem.bn.bias",
        "layers.stem.bn.running_mean",
    ]
    assert "layers.bneck1.se.fc1.weight" in keys and "layers.bneck2.expand.conv.weight" in keys
    assert keys[-2:] == ["layers.classifier.conv.weight", "layers.classifier.conv.bias"]


def test_bneck_shortcut_adds_the_input_and_leaves_it_alone():
    torch.manual_seed(0)
    block = Bneck(8, 32, 8, 3, 1, nn.Hardswish, {}, 8).eval()
    x = torch.randn(2, 8, 6, 6)
    x0 = x.clone()
    with torch.no_grad():
        path = nn.Sequential(*block.children())(x.clone())  # the path alone
        assert torch.equal(block(x), path + x0)
    assert torch.equal(x, x0)


def test_pointwise_runs_as_a_linear_at_1x1_and_as_a_conv_elsewhere():
    torch.manual_seed(0)
    conv = Pointwise(32, 10, 1)
    ref = nn.Conv2d(32, 10, 1)
    ref.load_state_dict(conv.state_dict())
    for size in (1, 3):
        x = torch.randn(4, 32, size, size)
        with torch.no_grad():
            assert torch.allclose(conv(x), ref(x), atol=1e-6)
            assert conv(x).shape == (4, 10, size, size)


def test_the_head_is_a_matrix_product_and_activations_run_in_place():
    from torch.profiler import profile

    model = build(load_spec(SMALL, si=2, num_classes=1000, resolution=64)).eval()
    with torch.no_grad(), profile() as prof:
        model(torch.randn(1, 3, 64, 64))
    ops = {e.key: e.count for e in prof.key_averages()}
    assert ops.get("aten::addmm") == 2  # the two classifier rows, as torchvision's Linear layers
    assert "aten::hardswish_" in ops and "aten::hardswish" not in ops
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.Hardswish))]
    assert acts and all(m.inplace for m in acts)


def test_training_through_in_place_layers_gives_the_gradients_of_the_plain_ones():
    torch.manual_seed(0)
    model = build(load_spec(SMALL, width=0.25)).train()
    plain = build(load_spec(SMALL, width=0.25)).train()
    plain.load_state_dict(model.state_dict())
    for m in plain.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = torch.randn(4, 3, 32, 32)
    for m in (model, plain):
        torch.manual_seed(1)  # the same dropout masks
        m(x).square().sum().backward()
    for (name, a), b in zip(model.named_parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name
