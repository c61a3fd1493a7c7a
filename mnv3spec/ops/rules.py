"""The named numeric rules of the MobileNet papers, each as the official code implements it."""

from __future__ import annotations


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without losing more than 10 %.

    The rule of the official TF MobileNet code (``_make_divisible`` in
    tensorflow/models research/slim/nets/mobilenet/mobilenet.py), which torchvision and timm copy:
    never below ``min_value`` (default ``divisor``), and if rounding down lost more than 10 % of
    ``value``, add one more ``divisor``.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_channels(
    channels: int, width: float, divisor: int, fixed: bool = False, min_width: float = 0.0
) -> int:
    """Channels of a layer under the width multiplier: ``channels·width`` made divisible.

    MobileNetV1 §3.3 introduced the multiplier; V2 and V3 round with :func:`make_divisible`.
    A row marked ``fixed`` keeps its channels (the Keras/timm convention for the head).
    ``min_width`` scales by ``max(width, min_width)``: V2's last conv keeps 1280 channels below
    width 1 and grows above it (``last_channel`` in torchvision's mobilenetv2.py, after the
    official TF code).
    """
    if fixed:
        return int(channels)
    return make_divisible(channels * max(width, min_width), divisor)


def expand_by_ratio(in_channels: int, ratio: float, divisor: int) -> int:
    """Expansion channels written as a ratio of the (already rounded) input channels.

    ``expand_input_by_factor`` in the official TF code: ``make_divisible(in·ratio)``.
    """
    return make_divisible(in_channels * ratio, divisor)


def se_channels(channels: int, divisor: int = 8) -> int:
    """Squeeze width of a squeeze-and-excite block: ``channels // 4`` made divisible.

    MobileNetV3 §5.3 fixes the SE bottleneck at 1/4 of the expansion layer; torchvision
    (``SqueezeExcitation`` in mobilenetv3.py) and the TF code round it with :func:`make_divisible`.
    """
    return make_divisible(channels // 4, divisor)


def conv_output_size(size: int, stride: int) -> int:
    """Spatial size after an odd ``k×k`` convolution with ``k // 2`` padding and ``stride``."""
    return (size - 1) // stride + 1
