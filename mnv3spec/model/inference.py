"""Copies of a built network prepared for running, not for training or saving: BatchNorm folded
into the convolution before it (:meth:`~mnv3spec.ops.layers.ConvBNAct.fuse`), and laid out as a
runtime wants it. Folding removes the ``bn`` entries from the ``state_dict``, so a copy is for
running; the original is untouched.

Every runtime starts from one of the two (:mod:`mnv3spec.deploy.runtimes`): ONNX Runtime,
TorchScript and ``torch.compile`` from :func:`optimize_for_inference`; ExecuTorch's XNNPACK and
LiteRT from :func:`for_xnnpack`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..ops.layers import ConvBNAct, Pointwise


def _folded(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded."""
    fused = copy.deepcopy(model).eval()
    for m in fused.modules():
        if isinstance(m, ConvBNAct):
            m.fuse()
    return fused


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm folded and the weights in channels_last (the
    layout PyTorch's and ONNX Runtime's convolutions run fastest in)."""
    return _folded(model).to(memory_format=torch.channels_last)


def for_xnnpack(model: nn.Module) -> nn.Module:
    """An eval-mode copy for XNNPACK: BN folded, weights contiguous (a channels_last weight fails
    XNNPACK's layout pass) and each :class:`Pointwise` a plain 1×1 ``Conv2d``; module names
    unchanged, so rows keep their names.

    The classifier's :class:`Pointwise` runs as ``linear(x.flatten(1), weight.flatten(1))``: a
    weight reshaped at run time is not a static weight to XNNPACK, so both classifier rows fell
    back to ExecuTorch's portable ``addmm``. As the plain 1×1 convolution it is, XNNPACK runs it
    (as a matrix product, as it runs every 1×1 convolution)."""
    fused = _folded(model)
    for parent in list(fused.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Pointwise):
                conv = nn.Conv2d(
                    child.in_channels, child.out_channels, 1, bias=child.bias is not None
                )
                conv.load_state_dict(child.state_dict())
                setattr(parent, name, conv)
    for p in fused.parameters():
        p.data = p.data.clone(memory_format=torch.contiguous_format)
    return fused
