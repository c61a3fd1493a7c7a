"""The one implementation of edits (spec/draft.py): one message per mistake, whichever front end
wrote the edit, and the order in which edits see each other."""

from __future__ import annotations

import pytest

from mnv3spec import SpecError, load_spec
from mnv3spec.errors import UserError
from mnv3spec.explore.grid import check_grids, parse_grid
from mnv3spec.spec.draft import Draft
from mnv3spec.spec.edits import flag, from_rows
from mnv3spec.spec.read import Marks

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"
MISSING = "has no row named 'nosuch'; its rows are"


def test_every_front_end_says_a_missing_row_in_the_same_words(tmp_path):
    variant = tmp_path / "v.yaml"
    variant.write_text("base: small\nname: v\nrows:\n  nosuch: {k: 3}\n")
    said = []
    for attempt in (
        lambda: load_spec(SMALL, **{"layers.nosuch.k": 3}),  # --set
        lambda: load_spec(SMALL).derive(**{"layers.nosuch.k": 3}),
        lambda: check_grids([load_spec(SMALL)], [parse_grid("layers.nosuch.k=3,5")]),
        lambda: load_spec(variant),
    ):
        with pytest.raises(UserError) as info:
            attempt()
        said.append(str(info.value))
    assert all(MISSING in s for s in said), said
    assert said[3].startswith(f"{variant}, line 4, column 3: rows.nosuch: the base small {MISSING}")
    assert "its rows are named: stem, bneck1" in said[3]  # a file names rows by name only


def test_edits_made_together_name_rows_as_they_were_before_any_of_them():
    doc = load_spec(SMALL).document
    draft = Draft.of(doc, Marks("<dict>"))
    draft.apply(from_rows({"bneck1": {"name": "bneck2"}, "bneck2": {"name": "bneck1"}}))
    assert [r.name for r in draft.rows[1:3]] == ["bneck2", "bneck1"]


def test_set_flags_are_made_one_after_another():
    spec = load_spec(SMALL, **{"layers.3.name": "b3", "layers.b3.se": False})
    assert spec.rows[3].name == "b3" and spec.rows[3].fields["se"] is False


def test_looking_up_a_value_finds_it_as_setting_it_would():
    draft = Draft.of(load_spec(SMALL).document, Marks("<dict>"))
    assert draft.get(flag("layers.bneck3.k", 5)) == 3
    assert draft.get(flag("width", 0.5)) == 1.0
    with pytest.raises(SpecError, match=r"^set nope=1: unknown parameter 'nope'"):
        draft.get(flag("nope", 1))
    with pytest.raises(SpecError, match=r"^set layers\.3\.fixed=1: the spec has no 'layers\[3\]"):
        draft.get(flag("layers.3.fixed", 1))
