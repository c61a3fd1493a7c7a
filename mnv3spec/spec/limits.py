"""The bounds of the spec format, one constant each: the schema, the reader and the checkpoint
reader all use these, so ``validate`` refuses exactly what ``show``, ``train`` and ``export`` would.

Each bound is far past any published MobileNet and short of what exhausts a machine; the
builder's parameter cap (``model/builder.py: MAX_PARAMETERS``) stays the backstop for
combinations (a wide network with many channels) that no single bound catches.
"""

from __future__ import annotations

MAX_SPEC_BYTES = 1 << 20  # 1 MiB; the shipped specs are about 3 KB
MAX_DEPTH = 32  # nesting of mappings and lists; a spec needs 3 (top level, layers, row)
MAX_WIDTH = 10.0  # the widest published MobileNet is 1.5 (V2 1.4, V3 1.25)
MAX_DIVISOR = 256
MAX_RESOLUTION = 8192  # an 8192² RGB image is 800 MB of float32 per batch item
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841
MAX_IN_CHANNELS = 64  # RGB is 3; multispectral stacks stay well below
MAX_CHANNELS = 65_536  # the widest MobileNet layer has 1,280 (V2 1.4: 1,792)
MAX_KERNEL = 15  # MobileNets use 3 to 7 (MixNet 9)
MAX_REPEAT = 32  # V2's longest stage repeats 4 times; each repeat is a block to build and run
MAX_FACTOR = 100.0  # expansion ratios are 1 to 6; min_width is a width multiplier
MAX_ROWS = 256  # MobileNetV3-Large has 21 rows
MAX_PARAM = 1e6  # a free parameter (such as si) is a stride, a size or a ratio
MAX_TEXT = 10_000  # characters of a name, description or source
MAX_VALUES = 10_000  # YAML keys and values in one file; 256 rows of 10 fields are about 5,500
MAX_FIELDS = 32  # fields a variant sets on one row; an operator has at most 12
MAX_PARAMS = 64  # parameters of a spec; the shipped ones have 8
MAX_BASES = 16  # a variant's chain of bases (a variant of a variant...); each is a file to read
