"""Bounds live in the schema: validate refuses what show, train and export would (issue 12)."""

from __future__ import annotations

import pytest
import yaml

from mnv3spec import SpecError, load_spec
from mnv3spec.spec import limits
from mnv3spec.spec.edits import parse_assignment
from mnv3spec.weights import checkpoint

from .conftest import ROOT

SMALL = ROOT / "specs" / "small.yaml"
HUGE = 99999999999999999999999  # over 2⁶³


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"width": 1000}, "params.width: found 1000; allowed: a number > 0, at most 10 "),
        ({"divisor": 512}, "params.divisor: found 512; allowed: an integer >= 1, at most 256 "),
        ({"resolution": 8193}, "found 8193; allowed: an integer >= 1, at most 8,192 "),
        ({"num_classes": 100_001}, "found 100001; allowed: an integer >= 1, at most 100,000 "),
        ({"num_classes": HUGE}, f"found {HUGE}; allowed: an integer >= 1, at most 100,000 "),
        ({"si": HUGE}, f"params.si: found {HUGE}; allowed: a number from -1e+06 to 1e+06"),
        ({"si": -1e7}, "params.si: found -10000000.0; allowed: a number from -1e+06"),
        ({"bn_eps": 2.0}, "params.bn_eps: found 2.0; allowed: a number > 0, at most 1 "),
        ({"layers.0.k": 17}, "layers[0].k: found 17; allowed: an odd integer kernel size"),
        ({"layers.0.out": 65_537}, "layers[0].out: found 65537; allowed: an integer >= 1 or"),
        ({"layers.1.exp": "x100"}, 'layers[1].exp: found "x100"; allowed: an integer >= 1 (at'),
        ({"layers.1.n": 33}, "layers[1].n: found 33; allowed: an integer >= 1 or a $parameter; "),
        ({"layers.1.n": HUGE}, f"layers[1].n: found {HUGE}; allowed: an integer >= 1 or a $p"),
    ],
)
def test_every_number_is_bounded_at_load(override, message):
    with pytest.raises(SpecError) as info:
        load_spec(SMALL, **override)
    assert message in str(info.value)


def test_text_is_bounded():
    doc = yaml.safe_load(SMALL.read_text())
    doc["name"] = "x" * 10_001
    with pytest.raises(SpecError, match=r'name: found "x{40,}\.\.\.; allowed: a name for the net'):
        load_spec(doc)


def test_a_limit_names_its_reason():
    with pytest.raises(SpecError, match=r"at most 32 blocks per row \(MobileNets repeat at most 4"):
        load_spec(SMALL, **{"layers.1.n": 33})


def test_too_many_rows(tmp_path):
    text = SMALL.read_text()
    row = "  - {op: dropout, p: 0.1}\n"
    head, _, tail = text.partition("  - {name: dropout")
    path = tmp_path / "long.yaml"
    path.write_text(head + row * 260 + "  - {name: dropout" + tail)
    with pytest.raises(
        SpecError, match=r"layers: found a list; allowed: a non-empty list of at most"
    ):
        load_spec(path)


def test_huge_integers_in_a_file_are_one_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SMALL.read_text().replace("num_classes: 100", f"num_classes: {HUGE}"))
    with pytest.raises(SpecError, match=rf"line \d+, column \d+: params.num_classes: found {HUGE}"):
        load_spec(path)
    path.write_text(SMALL.read_text().replace("divisor: 8", f"divisor: {'9' * 400}"))
    with pytest.raises(SpecError, match=r"params\.divisor: found an integer of 400 digits"):
        load_spec(path)


def test_huge_integers_through_set():
    key, value = parse_assignment(f"num_classes={HUGE}")
    with pytest.raises(SpecError, match=f"set num_classes={HUGE}: params.num_classes: found"):
        load_spec(SMALL, **{key: value})
    key, value = parse_assignment("num_classes=" + "9" * 5000)  # past Python's int() limit
    with pytest.raises(SpecError, match=r'params\.num_classes: found "9999'):
        load_spec(SMALL, **{key: value})


def test_one_resolution_limit_for_specs_and_checkpoints():
    assert checkpoint.MAX_RESOLUTION == limits.MAX_RESOLUTION


@pytest.mark.parametrize(
    "args",
    [
        ["validate", SMALL, "--set", f"num_classes={HUGE}"],
        ["show", SMALL, "--set", f"num_classes={HUGE}"],
        ["validate", SMALL, "--set", "width=1000"],
    ],
    ids=["validate-huge", "show-huge", "validate-wide"],
)
def test_cli_refuses_out_of_bounds_with_one_paragraph(cli, args):
    done = cli(*args, timeout=120)
    assert done.returncode == (1 if args[0] == "validate" else 2), done.stderr
    assert "Traceback" not in done.stderr
    assert "allowed: " in done.stderr and "at most" in done.stderr
