"""The building blocks the operators compile to. Child names match the paper's vocabulary."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .rules import se_channels


def init_conv(conv: nn.Conv2d, classifier: bool = False) -> None:
    """torchvision's MobileNet initialisation: Kaiming (fan-out) weights and zero bias; a
    classifier conv (no BN, the paper's NBN rows) gets the N(0, 0.01) torchvision gives its
    Linear layers."""
    if classifier:
        nn.init.normal_(conv.weight, 0, 0.01)
    else:
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite as in MobileNetV3 §5.3: pool → 1×1 → ReLU → 1×1 → hard-sigmoid → scale."""

    def __init__(self, channels: int, divisor: int) -> None:
        super().__init__()
        squeeze = se_channels(channels, divisor)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale))))
        return x * scale


class ConvBNAct(nn.Sequential):
    """k×k convolution, optional BatchNorm, optional activation, optional squeeze-and-excite.

    Without BN the convolution carries a bias (the paper's "NBN" rows).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int,
        act: type[nn.Module] | None,
        bn: dict | None,
        groups: int = 1,
        se_divisor: int | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bn is None
        )
        if bn is not None:
            self.bn = nn.BatchNorm2d(out_ch, **bn)
        if act is not None:
            self.act = act()
        if se_divisor is not None:
            self.se = SqueezeExcite(out_ch, se_divisor)


class Bneck(nn.Module):
    """MobileNetV3 bottleneck (an inverted residual, V2 §3.3, with V3's SE and activations).

    1×1 expansion (skipped when exp == in), k×k depthwise, optional SE, linear 1×1 projection;
    identity shortcut when stride is 1 and in == out.
    """

    def __init__(
        self,
        in_ch: int,
        exp: int,
        out_ch: int,
        kernel: int,
        stride: int,
        act: type[nn.Module] | None,
        bn: dict,
        se_divisor: int | None,
    ) -> None:
        super().__init__()
        self.residual = stride == 1 and in_ch == out_ch
        if exp != in_ch:
            self.expand = ConvBNAct(in_ch, exp, 1, 1, act, bn)
        self.dw = ConvBNAct(exp, exp, kernel, stride, act, bn, groups=exp)
        if se_divisor is not None:
            self.se = SqueezeExcite(exp, se_divisor)
        self.project = ConvBNAct(exp, out_ch, 1, 1, None, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.children():
            y = block(y)
        return x + y if self.residual else y


def init_weights(model: nn.Module) -> None:
    """Initialise every layer once, as torchvision initialises its MobileNets. The model is built
    on the meta device, so any other layer an operator brings gets its own ``reset_parameters``."""
    done: set[nn.Module] = set()
    for m in model.modules():
        if isinstance(m, ConvBNAct):
            init_conv(m.conv, classifier=not hasattr(m, "bn"))
            done.add(m.conv)
        elif isinstance(m, SqueezeExcite):
            init_conv(m.fc1)
            init_conv(m.fc2)
            done |= {m.fc1, m.fc2}
    for m in model.modules():
        if m not in done and callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()  # BatchNorm: ones, zeros and fresh running statistics
