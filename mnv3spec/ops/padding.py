"""TF's "SAME" padding, for specs with ``padding: same``.

PyTorch pads a k×k convolution by ``k // 2`` on every side. TF's SAME pads just enough for
``ceil(size / stride)`` outputs and puts the odd pixel after (bottom, right). For odd k and
stride 1 the two agree; a stride-2 conv on an even-sized map is shifted by one pixel. Shapes,
parameters and multiply-adds are the same either way; only the outputs differ, so networks ported
from TF (timm's ``tf_*`` models, Keras) need it to compute the same function.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Pixels before and after one axis under TF's SAME rule (``get_pad`` in TF's
    ``nn_ops.py``; timm's ``get_same_padding``): total ``(ceil(size/s) - 1)·s + k - size``,
    the larger half after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` padded as TF's SAME at whatever size it meets; same parameters and names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = same_padding(x.shape[-2], kh, sh)
        left, right = same_padding(x.shape[-1], kw, sw)
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)


def pad_like_tf(model: nn.Module) -> None:
    """Give every strided convolution of ``model`` TF's SAME padding. Stride-1 convolutions with
    odd kernels already pad the same way, so they stay plain ``nn.Conv2d``."""
    for m in model.modules():
        if type(m) is nn.Conv2d and m.stride != (1, 1):
            m.__class__ = SameConv2d  # the same tensors under the same names: state_dicts still fit
            m.padding = (0, 0)
