"""Edits (spec/edits.py): what each --set key and each variant row compiles to."""

from __future__ import annotations

import pytest

from mnv3spec import SpecError, load_spec
from mnv3spec.spec.edits import DROP, Edit, Flag, flag, from_overrides, from_rows

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("width", ("width",)),  # a parameter the spec defines
        ("params.in_channels", ("params", "in_channels")),  # a parameter, maybe new
        ("layers.3.se", ("layers", 3, "se")),  # a row by its index
        ("layers.bneck3.se", ("layers", "bneck3", "se")),  # a row by its name
        ("layers.3", ("layers", "3")),  # no row's field: a key of layers (which refuses it)
        ("name.x", ("name", "x")),
    ],
)
def test_a_set_key_is_a_path(key, path):
    assert flag(key, 1).path == path


def test_an_edit_from_a_flag_is_named_as_typed():
    edit = flag("layers.bneck3.se", True)
    assert edit == Edit(("layers", "bneck3", "se"), True, Flag("layers.bneck3.se=true"))
    assert edit.origin.label == "set layers.bneck3.se=true"
    assert [e.path for e in from_overrides({"width": 0.5, "si": 2})] == [("width",), ("si",)]


def test_a_row_index_too_long_for_any_spec_is_refused_before_it_is_converted():
    with pytest.raises(SpecError, match=r"^set layers\.9+\.\.\.=5: '9+\.\.\.' is no row's index"):
        flag(f"layers.{'9' * 5000}.k", 5)


def test_a_variant_s_rows_are_edits_by_row_name_and_null_drops_a_field():
    edits = from_rows({"bneck3": {"exp": 16, "se": None}})
    assert [(e.path, e.value) for e in edits] == [
        (("layers", "bneck3", "exp"), 16),
        (("layers", "bneck3", "se"), DROP),
    ]
    assert edits[0].origin.label == "set layers.bneck3.exp=16"


def test_load_spec_and_derive_take_edits_before_overrides():
    edits = from_rows({"bneck3": {"exp": 96}, "last_conv": {"se": None}})
    spec = load_spec(SMALL, edits, width=0.5)
    assert spec.rows[3].fields["exp"] == 96 and spec.params["width"] == 0.5
    assert "se" not in spec.document["layers"][12]
    assert load_spec(SMALL).derive(edits, width=0.5).rows == spec.rows
    with pytest.raises(SpecError, match=r"^set layers\.bneck3\.k=4: layers\[3\]\.k: found 4"):
        load_spec(SMALL, from_rows({"bneck3": {"k": 4}}))
