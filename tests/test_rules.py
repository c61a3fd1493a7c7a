import pytest
from torchvision.models._utils import _make_divisible

from mnv3spec.ops.rules import (
    conv_output_size,
    expand_by_ratio,
    make_divisible,
    scale_channels,
    se_channels,
)


@pytest.mark.parametrize(
    "value", [3, 7.5, 8, 12, 16 * 0.35, 20, 44.8, 72 * 0.75, 960 * 0.35, 1280 * 1.3]
)
def test_make_divisible_matches_torchvision(value):
    assert make_divisible(value, 8) == _make_divisible(value, 8)


def test_make_divisible_never_loses_more_than_ten_percent():
    # 12 → 8 would lose a third; 20 rounds half-up to 24.
    assert make_divisible(12, 8) == 16
    assert make_divisible(20, 8) == 24
    assert make_divisible(3, 8) == 8
    assert make_divisible(90, 16) == 96


def test_scale_channels_respects_fixed():
    assert scale_channels(1280, 0.5, 8) == 640
    assert scale_channels(1280, 0.5, 8, fixed=True) == 1280


def test_se_channels_is_a_quarter_made_divisible():
    assert se_channels(96) == 24
    assert se_channels(120) == 32  # 30 → 32
    assert se_channels(72) == 24  # 18 → 16 loses > 10 % → 24


def test_expand_by_ratio_uses_rounded_input():
    assert expand_by_ratio(24, 3.67, 8) == 88
    assert expand_by_ratio(16, 4.5, 8) == 72


def test_conv_output_size_same_padding():
    assert conv_output_size(224, 2) == 112
    assert conv_output_size(7, 2) == 4
    assert conv_output_size(32, 1) == 32
