"""The JSON Schema of the spec format: a small hand-written base (the top level, the parameters,
the field types, all bounded by :mod:`.limits`) and an op part generated from the registry.

``mnv3spec/spec/schema.json`` ships the result for editors and other tools; regenerate it with
``python -m mnv3spec.spec --write`` after changing the registry or the limits (a test checks it).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..ops.registry import ACTIVATIONS, OPS, PADDINGS
from . import limits as L

SHIPPED = Path(__file__).with_name("schema.json")
# Names the format, not a place to fetch it from (a URN is an absolute URI, as $id must be);
# the version changes when a spec valid under the old schema would no longer be.
SCHEMA_ID = "urn:mnv3spec:spec:v1"
VARIANT_SHIPPED = Path(__file__).with_name("variant.schema.json")
VARIANT_ID = "urn:mnv3spec:variant:v1"
REF = {"$ref": "#/$defs/ref"}


def _or_ref(kind: dict, description: str) -> dict:
    return {"anyOf": [kind, REF], "description": description}


def _number(low: str, high: float, why: str, **bounds: Any) -> dict:
    return {"type": "number", **bounds, "description": f"a number {low}, at most {high:g} ({why})"}


def _integer(high: int, why: str) -> dict:
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": high,
        "description": f"an integer >= 1, at most {high:,} ({why})",
    }


def _param_properties() -> dict:
    """The named parameters: the ones every spec has, and a few optional ones."""
    return {
        "width": _number(
            "> 0",
            L.MAX_WIDTH,
            "the width multiplier; the widest published MobileNet is 1.5",
            exclusiveMinimum=0,
            maximum=L.MAX_WIDTH,
        ),
        "divisor": _integer(L.MAX_DIVISOR, "channel counts are rounded to multiples of it"),
        "resolution": _integer(L.MAX_RESOLUTION, "input height and width; the checkpoint limit"),
        "num_classes": _integer(L.MAX_CLASSES, "ImageNet-21k has 21,841"),
        "bn_momentum": _number(
            "in (0, 1]", 1, "PyTorch's convention: 1 - TF decay", exclusiveMinimum=0, maximum=1
        ),
        "bn_eps": _number(
            "> 0", 1, "a variance floor; MobileNets use 0.001", exclusiveMinimum=0, maximum=1
        ),
        "in_channels": _integer(L.MAX_IN_CHANNELS, "3 for RGB, the default"),
        "dropout": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "description": "a number in [0, 1)",
        },
        "padding": {
            "enum": list(PADDINGS),
            "description": "symmetric (k // 2 on every side, PyTorch's; the default) or same "
            "(TF's SAME: strided convs put the odd pixel after)",
        },
    }


def _params() -> dict:
    required = ["width", "divisor", "resolution", "num_classes", "bn_momentum", "bn_eps"]
    return {
        "type": "object",
        "description": f"a mapping of parameter names to numbers; {', '.join(required)} are "
        "required",
        "required": required,
        "propertyNames": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "maxProperties": L.MAX_PARAMS,
        "properties": _param_properties(),
        "additionalProperties": {
            "type": "number",
            "minimum": -L.MAX_PARAM,
            "maximum": L.MAX_PARAM,
            "description": f"a number from -{L.MAX_PARAM:g} to {L.MAX_PARAM:g} (a stride, a size "
            "or a ratio for rows to refer to)",
        },
    }


def _field_types() -> dict:
    """The ``$defs`` that registry fields name as their type."""
    integer = {"type": "integer", "minimum": 1}
    return {
        "kernel": _or_ref(
            {**integer, "maximum": L.MAX_KERNEL, "not": {"multipleOf": 2}},
            f"an odd integer kernel size or a $parameter; at most {L.MAX_KERNEL} "
            "(MobileNets use 3 to 7)",
        ),
        "channels": _or_ref(
            {**integer, "maximum": L.MAX_CHANNELS},
            f"an integer >= 1 or a $parameter; at most {L.MAX_CHANNELS:,} (the widest MobileNet "
            "layer has 1,792)",
        ),
        "expansion": {
            "anyOf": [
                {**integer, "maximum": L.MAX_CHANNELS},
                {"type": "string", "pattern": "^x[0-9]{1,2}(\\.[0-9]{1,4})?$"},
                REF,
            ],
            "description": f"an integer >= 1 (at most {L.MAX_CHANNELS:,}), a ratio of the input "
            "channels written x6 or x4.5 (below x100), or a $parameter",
        },
        "stride": _or_ref({"type": "integer", "enum": [1, 2]}, "1, 2 or a $parameter"),
        "repeat": _or_ref(
            {**integer, "maximum": L.MAX_REPEAT},
            f"an integer >= 1 or a $parameter; at most {L.MAX_REPEAT} blocks per row (MobileNets "
            "repeat at most 4; write more rows for more)",
        ),
        "probability": _or_ref(
            {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "a number in [0, 1) or a $parameter",
        ),
        "nl": {
            "enum": list(ACTIVATIONS),
            "description": ", ".join(
                f"{k} ({v})" if v else k for k, v in ACTIVATIONS.items()
            ).replace(", none", " or none"),
        },
        "flag": {"type": "boolean", "description": "true or false"},
        "factor": _or_ref(
            {"type": "number", "exclusiveMinimum": 0, "maximum": L.MAX_FACTOR},
            f"a number > 0 or a $parameter; at most {L.MAX_FACTOR:g} (an expansion ratio or a "
            "width)",
        ),
    }


def _op(name: str) -> dict:
    fields = OPS[name].fields
    properties: dict[str, Any] = {"op": {"const": name}}
    for key, f in fields.items():
        properties[key] = {"$ref": f"#/$defs/{f.type}"}
        if not f.required:
            properties[key]["default"] = f.default
    properties["name"] = {"$ref": "#/$defs/row_name"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["op", *(k for k, f in fields.items() if f.required)],
        "properties": properties,
    }


def _ops() -> dict:
    """The op part: the op names, the row's dispatch on op, one ``op_<name>`` per operator."""
    row = {
        "type": "object",
        "description": "a mapping with an op and that op's fields",
        "required": ["op"],
        "properties": {"op": {"$ref": "#/$defs/op"}},
        "allOf": [
            {"if": {"properties": {"op": {"const": n}}}, "then": {"$ref": f"#/$defs/op_{n}"}}
            for n in OPS
        ],
    }
    return {"op": {"enum": list(OPS)}, "row": row, **{f"op_{n}": _op(n) for n in OPS}}


def generate() -> dict:
    """The whole JSON Schema of the spec format."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "mnv3spec network spec",
        "description": "a mapping with name, params and layers (optionally description, source)",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "params", "layers"],
        "properties": {
            "name": _text("a name for the network"),
            "description": _text("free text"),
            "source": _text("where the table comes from"),
            "params": {"$ref": "#/$defs/params"},
            "layers": {
                "type": "array",
                "minItems": 1,
                "maxItems": L.MAX_ROWS,
                "description": f"a non-empty list of at most {L.MAX_ROWS} rows, each a mapping "
                "with an op (MobileNetV3-Large has 21)",
                "items": {"$ref": "#/$defs/row"},
            },
        },
        "$defs": {
            "ref": {"type": "string", "pattern": "^\\$[A-Za-z_][A-Za-z0-9_]*$"},
            "row_name": {
                "type": "string",
                "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                "description": "a name for the row, unique in the spec (bneck3): letters, digits "
                "and _, not starting with a digit, at most 64 characters",
            },
            "params": _params(),
            **_field_types(),
            **_ops(),
        },
    }


def generate_variant() -> dict:
    """The JSON Schema of a variant file (``base:`` and its edits), for editors: the rows it
    inserts are checked as any row is; :mod:`.variant` checks the rest with line and column."""
    flat = generate()
    name = {"$ref": "#/$defs/row_name"}
    return {
        "$schema": flat["$schema"],
        "$id": VARIANT_ID,
        "title": "mnv3spec variant: a base spec and what changes",
        "description": "a mapping with base and name, then params, rows, remove, insert",
        "type": "object",
        "additionalProperties": False,
        "required": ["base", "name"],
        "properties": {
            "base": _text(
                "a shipped spec (small, large, ...), or a path relative to this file to a file in "
                "its folder or below (or in a folder the command line trusts)"
            ),
            "name": _text("a name for the network"),
            "description": _text("free text"),
            "source": _text("where the table comes from"),
            "params": {
                "type": "object",
                "description": "parameters set over the base's; null drops one",
                "maxProperties": L.MAX_PARAMS,
                "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
            },
            "rows": {
                "type": "object",
                "description": "fields set over the named rows of the base; null drops a field",
                "propertyNames": name,
                "maxProperties": L.MAX_ROWS,
                "additionalProperties": {"type": "object", "maxProperties": L.MAX_FIELDS},
            },
            "remove": {
                "type": "array",
                "description": "rows dropped, by name",
                "maxItems": L.MAX_ROWS,
                "items": name,
            },
            "insert": _insert(name),
        },
        "$defs": flat["$defs"],
    }


def _insert(name: dict) -> dict:
    """A variant's ``insert:``: rows before or after a named row."""
    rows = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/row"}}
    return {
        "type": "array",
        "description": "new rows before or after a named row",
        "maxItems": L.MAX_ROWS,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rows"],
            "properties": {"before": name, "after": name, "rows": rows},
        },
    }


def _text(what: str) -> dict:
    return {
        "type": "string",
        "maxLength": L.MAX_TEXT,
        "description": f"{what}, at most {L.MAX_TEXT:,} characters",
    }


@functools.cache
def schema() -> dict:
    """The JSON Schema validation uses: generated, so it always agrees with the registry."""
    return generate()


def dumps() -> str:
    """The text of ``schema.json``."""
    return json.dumps(generate(), indent=2, ensure_ascii=False) + "\n"


def variant_dumps() -> str:
    """The text of ``variant.schema.json``."""
    return json.dumps(generate_variant(), indent=2, ensure_ascii=False) + "\n"


def write() -> tuple[Path, Path]:
    """Regenerate the shipped ``schema.json`` and ``variant.schema.json``."""
    SHIPPED.write_text(dumps(), encoding="utf-8")
    VARIANT_SHIPPED.write_text(variant_dumps(), encoding="utf-8")
    return SHIPPED, VARIANT_SHIPPED
