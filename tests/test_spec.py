"""Loading and validating specs: the broken-spec corpus, overrides, references."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from mnv3spec import SpecError, load_spec
from mnv3spec.model.plan import plan
from mnv3spec.spec.edits import parse_assignment
from mnv3spec.spec.read import shipped_specs

from .conftest import ROOT, SPECS

SMALL = ROOT / "specs" / "small.yaml"

BAD = sorted((ROOT / "tests" / "bad_specs").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), path
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_broken_spec_gets_a_clear_error(path):
    with pytest.raises(SpecError) as info:
        plan(load_spec(path))
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert _expected(path) in message
    assert "\n" not in message


def test_python_tag_is_never_executed(tmp_path):
    marker = Path("/tmp/mnv3spec-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(SpecError):
        load_spec(ROOT / "tests" / "bad_specs" / "python_tag.yaml")
    assert not marker.exists()


def test_a_dataset_file_by_mistake(tmp_path):
    data = tmp_path / "data_batch_1"
    data.write_bytes(pickle.dumps({b"data": bytes(range(256)) * 12, b"labels": [0]}))
    with pytest.raises(SpecError, match=r"binary file .* not a YAML spec"):
        load_spec(data)


def test_missing_file_names_the_path_and_the_shipped_specs(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: no such file; .* shipped one: large, "):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_shipped_specs_by_name_from_any_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in ("small", "small.yaml", "specs/small.yaml"):
        spec = load_spec(name)
        assert spec.name == "mobilenet_v3_small"
        assert spec.source.endswith("small.yaml")
    assert set(shipped_specs()) == {p.stem for p in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_are_valid_and_round_trip(path):
    spec = load_spec(path)
    again = load_spec(yaml.safe_load(spec.to_yaml()))
    assert [r.fields for r in again.rows] == [r.fields for r in spec.rows]
    assert again.params == spec.params


def test_parameter_overrides_and_references():
    spec = load_spec(ROOT / "specs" / "small.yaml", si=2, width=0.5)
    assert spec.params["si"] == 2 and spec.params["width"] == 0.5
    # Table 2's rows that take the initial stride: the first conv, bneck 1 and bneck 2.
    assert [r.fields.get("s") for r in spec.rows[:4]] == [2, 2, 2, 1]
    assert spec.document["layers"][0]["s"] == "$si"  # the document keeps the reference


def test_dotted_override_edits_a_row():
    spec = load_spec(ROOT / "specs" / "small.yaml", **{"layers.12.se": True})
    assert spec.rows[12].fields["se"] is True


def test_override_errors_name_the_override():
    with pytest.raises(
        SpecError, match=r"^set foo=1: unknown parameter 'foo'; the spec defines: width"
    ):
        load_spec(ROOT / "specs" / "small.yaml", foo=1)
    with pytest.raises(SpecError, match=r"comes from \$si, overridden with si=3\)"):
        load_spec(ROOT / "specs" / "small.yaml", si=3)
    with pytest.raises(
        SpecError, match=r"^set width=0: params.width: found 0; allowed: a number > 0"
    ):
        load_spec(ROOT / "specs" / "small.yaml", width=0)
    with pytest.raises(
        SpecError, match=r"unknown key 'k'.* \(the row as overridden with layers.0.op=pool\)"
    ):
        load_spec(ROOT / "specs" / "small.yaml", **{"layers.0.op": "pool"})
    with pytest.raises(SpecError, match=r"has no 'layers\[99\]'"):
        load_spec(ROOT / "specs" / "small.yaml", **{"layers.99.se": True})


def test_overrides_must_be_finite_and_integers_must_be_ints():
    with pytest.raises(SpecError, match="must be a finite number"):
        parse_assignment("width=.inf")
    with pytest.raises(SpecError, match=r"found 2\.0; allowed: 1, 2 .*overridden with si=2\.0"):
        load_spec(ROOT / "specs" / "small.yaml", si=2.0)
    with pytest.raises(SpecError, match=r"layers\[0\]\.k: found 3\.0; allowed: an odd integer"):
        load_spec(ROOT / "specs" / "small.yaml", **{"layers.0.k": 3.0})


def test_parse_assignment_reads_yaml_scalars():
    assert parse_assignment("width=0.5") == ("width", 0.5)
    assert parse_assignment("layers.3.se=true") == ("layers.3.se", True)
    assert parse_assignment("si=2") == ("si", 2)
    with pytest.raises(SpecError, match="not KEY=VALUE"):
        parse_assignment("width")
    with pytest.raises(SpecError, match="must be a number"):
        parse_assignment("width=[1, 2]")


def test_dict_source_is_not_mutated():
    doc = yaml.safe_load((ROOT / "specs" / "large.yaml").read_text())
    load_spec(doc, width=0.5)
    assert doc["params"]["width"] == 1.0


def test_yaml_1_2_exponent_floats_are_numbers(tmp_path):
    text = (ROOT / "specs" / "small.yaml").read_text().replace("bn_eps: 0.001", "bn_eps: 1e-3")
    (tmp_path / "s.yaml").write_text(text)
    assert load_spec(tmp_path / "s.yaml").params["bn_eps"] == 1e-3
    assert parse_assignment("bn_eps=1e-5") == ("bn_eps", 1e-5)


def test_deep_nesting_is_one_error(tmp_path):
    # Our own message, whatever PyYAML's version says (6.0.4 has its own depth limit).
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\nparams: " + "[" * 10_000 + "]" * 10_000)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value) == (
        f"{path}, line 2, column 40: nested more than 32 levels deep; a spec needs 3 "
        "(the top level, layers, a row)"
    )


def test_set_names_a_row_by_its_name_beside_its_index():
    by_name = load_spec(SMALL, **{"layers.last_conv.se": True})
    by_index = load_spec(SMALL, **{"layers.12.se": True})
    assert by_name.rows == by_index.rows and by_name.rows[12].name == "last_conv"
    with pytest.raises(SpecError) as info:
        load_spec(SMALL, **{"layers.bneck99.se": True})
    assert str(info.value) == (
        "set layers.bneck99.se=true: the spec has no row named 'bneck99'; its rows are 0..16, "
        "named: stem, bneck1, bneck2, bneck3, bneck4, bneck5, bneck6, bneck7, bneck8, bneck9, "
        "bneck10, bneck11, last_conv, pool, head, dropout, classifier"
    )


def test_an_error_in_a_named_row_names_the_row():
    with pytest.raises(SpecError, match=r"layers\[3\]\.k: found 4; .* \(row bneck3\)$"):
        load_spec(SMALL, **{"layers.bneck3.k": 4})


def _small_with(tmp_path, old: str, new: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(SMALL.read_text().replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "name: bneck4,",
            "name: bneck2,",
            "line 28, column 12: layers[4].name: the row name 'bneck2' is already used by "
            "layers[2]; names are unique within a spec",
        ),
        (
            "name: bneck4,",
            "name: r05_bneck,",
            "line 28, column 12: layers[4].name: 'r05_bneck' has the form of the module name of "
            "an unnamed row",
        ),
        (
            "name: bneck4,",
            "name: 4th,",
            'line 28, column 12: layers[4].name: found "4th"; allowed: a name for the row, '
            "unique in the spec (bneck3): letters, digits and _",
        ),
        ("name: bneck4,", "name: 4,", "line 28, column 12: layers[4].name: found 4; allowed:"),
    ],
)
def test_row_names_are_unique_identifiers(tmp_path, old, new, expected):
    path = _small_with(tmp_path, old, new)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}, {expected}")


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("relu", " (for ReLU write RE)"),
        ("ReLU6", " (for ReLU6 write R6)"),
        ("hardswish", " (for Hardswish write HS)"),
        ("hs", " (for Hardswish write HS)"),
        ("hswish", ""),  # no guess by likeness: the allowed words are listed
        ("gelu", ""),
    ],
)
def test_an_activation_spelled_another_way_names_the_word_to_write(value, hint):
    """Issue 31: ``nl: relu`` says to write RE, never a suggestion by spelling alone."""
    with pytest.raises(SpecError) as info:
        load_spec("small", **{"layers.bneck1.nl": value})
    message = info.value.message
    assert message.startswith(f'found "{value}"; allowed: RE (ReLU), HS (Hardswish), R6 (ReLU6)')
    assert message.endswith(f"or none{hint} (row bneck1)")
