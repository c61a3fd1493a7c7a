"""The building blocks the operators compile to. Child names match the paper's vocabulary.

Each block owns its surgery: :meth:`ConvBNAct.fuse` folds its BatchNorm, and a classifier conv
says so when built (``classifier=True``) rather than being guessed from its missing BN.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .rules import se_channels


def init_conv(conv: nn.Conv2d, classifier: bool = False) -> None:
    """torchvision's MobileNet initialisation: Kaiming (fan-out) weights and zero bias; a
    classifier conv (the paper's NBN rows, built with ``classifier=True``) gets the N(0, 0.01)
    torchvision gives its Linear layers."""
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
        scale = F.hardsigmoid(self.fc2(F.relu(self.fc1(scale), inplace=True)))
        return x * scale


class Pointwise(nn.Conv2d):
    """A 1×1 convolution that runs as a matrix product when its input is 1×1, as torchvision's
    classifier runs its ``Linear`` layers: the same parameters and result, without the cost of a
    convolution call on a single pixel (the slow im2col path on CPU). Both branches compute the
    same function, so a trace that keeps the one it took stays correct at every input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (1, 1):
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]


def activation(act: type[nn.Module]) -> nn.Module:
    """``act`` in place where it can be: it always follows a convolution or BN whose output
    nothing else reads (as in torchvision), and in-place halves the buffers a forward allocates."""
    return act(inplace=True) if "inplace" in inspect.signature(act).parameters else act()


class ConvBNAct(nn.Sequential):
    """k×k convolution, optional BatchNorm, optional activation, optional squeeze-and-excite.

    Without BN the convolution carries a bias (the paper's "NBN" rows). A ``classifier`` conv gets
    the initialisation of a ``Linear`` layer and, at 1×1, runs as one (:class:`Pointwise`).
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
        classifier: bool = False,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        conv = Pointwise if classifier and kernel == 1 and groups == 1 else nn.Conv2d
        self.conv = conv(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bn is None)
        if bn is not None:
            self.bn = nn.BatchNorm2d(out_ch, **bn)
        if act is not None:
            self.act = activation(act)
        if se_divisor is not None:
            self.se = SqueezeExcite(out_ch, se_divisor)

    def fuse(self) -> None:
        """Fold the BatchNorm into the convolution (eval mode only: it uses the running
        statistics). The block computes the same function; its ``state_dict`` loses the ``bn``
        entries, so a fused block is for running, not for saving."""
        if "bn" not in self._modules:
            return
        if self.training:
            raise RuntimeError("fuse() folds the running statistics: call .eval() first")
        self.conv = fuse_conv_bn_eval(self.conv, self.bn)
        del self.bn


class Bneck(nn.Sequential):
    """MobileNetV3 bottleneck (an inverted residual, V2 §3.3, with V3's SE and activations).

    1×1 expansion (skipped when exp == in), k×k depthwise, optional SE, linear 1×1 projection;
    identity shortcut when stride is 1 and in == out. The path is a ``Sequential`` built from an
    explicit ordered mapping, so its order is stated here and its children keep the names
    ``expand``, ``dw``, ``se``, ``project`` (torchvision's weight mapping pairs them in that order).
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
        path: OrderedDict[str, nn.Module] = OrderedDict()
        if exp != in_ch:
            path["expand"] = ConvBNAct(in_ch, exp, 1, 1, act, bn)
        path["dw"] = ConvBNAct(exp, exp, kernel, stride, act, bn, groups=exp)
        if se_divisor is not None:
            path["se"] = SqueezeExcite(exp, se_divisor)
        path["project"] = ConvBNAct(exp, out_ch, 1, 1, None, bn)
        super().__init__(path)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)  # a fresh tensor (the projection's output), so adding in place
        return y.add_(x) if self.residual else y  # is safe, also for autograd, as in torchvision


def init_weights(model: nn.Module) -> None:
    """Initialise every layer once, as torchvision initialises its MobileNets. The model is built
    on the meta device, so any other layer an operator brings gets its own ``reset_parameters``."""
    done: set[nn.Module] = set()
    for m in model.modules():
        if isinstance(m, ConvBNAct):
            init_conv(m.conv, classifier=m.classifier)
            done.add(m.conv)
        elif isinstance(m, SqueezeExcite):
            init_conv(m.fc1)
            init_conv(m.fc2)
            done |= {m.fc1, m.fc2}
    for m in model.modules():
        if m not in done and callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()  # BatchNorm: ones, zeros and fresh running statistics
