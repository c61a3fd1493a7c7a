"""Row names PyTorch has taken (spec/names.py): the list the torch-free loader keeps agrees
with the installed torch, so validate refuses exactly what the builder would."""

from __future__ import annotations

import re

import pytest
from torch import nn

from mnv3spec.spec.names import TAKEN, taken_by_torch

ROW_NAME = re.compile("[A-Za-z_][A-Za-z0-9_]{0,63}")


def test_every_attribute_of_a_module_a_row_name_could_spell_is_taken():
    attributes = {n for n in dir(nn.Sequential()) if ROW_NAME.fullmatch(n)}
    missing = sorted(n for n in attributes if not taken_by_torch(n))
    assert not missing, f"torch has new attributes; add them to spec/names.py: {missing}"
    assert {"forward", "training", "state_dict", "_modules"} <= TAKEN


@pytest.mark.parametrize("name", ["forward", "training", "state_dict", "__class__", "__foo__"])
def test_taken(name):
    assert taken_by_torch(name)


@pytest.mark.parametrize("name", ["bneck3", "stem", "head", "_private", "forward2", "__x"])
def test_free(name):
    assert not taken_by_torch(name)
