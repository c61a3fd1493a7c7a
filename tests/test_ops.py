"""The registry is the one source: the schema's op part is generated from it, defaults included."""

import json

import pytest

from mnv3spec import load_spec
from mnv3spec.ops.registry import ACTIVATIONS, OPS, with_defaults
from mnv3spec.spec.schema import SHIPPED, VARIANT_SHIPPED, dumps, generate, variant_dumps

from .conftest import SPECS


def test_shipped_schema_json_is_the_generated_one():
    # If this fails after a registry or limits change: python -m mnv3spec.spec --write
    assert SHIPPED.read_text(encoding="utf-8") == dumps()
    assert VARIANT_SHIPPED.read_text(encoding="utf-8") == variant_dumps()


def test_every_field_type_is_a_schema_type():
    defs = generate()["$defs"]
    for name, op in OPS.items():
        for key, f in op.fields.items():
            assert f.type in defs, (name, key, f.type)


def test_each_operator_schema_has_the_registered_fields_and_defaults():
    defs = generate()["$defs"]
    assert defs["op"]["enum"] == list(OPS)
    assert {b["if"]["properties"]["op"]["const"] for b in defs["row"]["allOf"]} == set(OPS)
    for name, op in OPS.items():
        block = defs[f"op_{name}"]
        assert set(block["properties"]) == {"op", "name", *op.fields}, name
        assert block["additionalProperties"] is False, name
        assert set(block["required"]) == {"op", *(k for k, f in op.fields.items() if f.required)}
        for key, f in op.fields.items():
            assert block["properties"][key].get("default", "none given") == (
                "none given" if f.required else f.default
            )
    assert defs["nl"]["enum"] == list(ACTIVATIONS)


def test_defaults_fill_what_a_row_leaves_out():
    assert with_defaults("conv2d", {"op": "conv2d", "k": 1, "out": 8}) == {
        "op": "conv2d",
        "k": 1,
        "out": 8,
        "s": 1,
        "nl": "none",
        "se": False,
        "bn": True,
        "fixed": False,
        "min_width": 0.0,
    }
    assert with_defaults("bneck", {"n": 2})["n"] == 2  # written values win


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_resolved_rows_carry_every_field(path):
    spec = load_spec(path)
    for row in spec.rows:
        assert set(row.fields) == {"op", *OPS[row.op].fields}, row
    # ...while the document a checkpoint embeds stays as written
    written = json.dumps(spec.document)
    assert "min_width" not in written or "min_width" in path.read_text()
