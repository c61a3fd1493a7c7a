"""The schema, the builder and the summary read one registry: prove the schema agrees with it."""

from mnv3spec.ops.registry import ACTIVATIONS, OPS
from mnv3spec.spec.load import schema


def test_schema_lists_exactly_the_registered_operators():
    defs = schema()["$defs"]
    assert set(defs["op"]["enum"]) == set(OPS)
    branches = {b["if"]["properties"]["op"]["const"] for b in defs["row"]["allOf"]}
    assert branches == set(OPS)


def test_each_operator_schema_has_exactly_the_registered_fields():
    defs = schema()["$defs"]
    for name, op in OPS.items():
        block = defs[f"op_{name}"]
        assert set(block["properties"]) == set(op.fields), name
        assert block["additionalProperties"] is False, name
        assert block["properties"]["op"] == {"const": name}


def test_schema_activations_are_the_registered_ones():
    assert set(schema()["$defs"]["nl"]["enum"]) == set(ACTIVATIONS)
